defmodule Oban.Job do
  @moduledoc """
  `Oban.Job` as code written against Oban 2.23 sees it (lib/oban/job.ex): the struct a worker's
  `perform/1` receives, and `new/2`, which builds what `Oban.insert/2` takes.

  Differences from Oban, all on purpose:
  - `new/2` returns an `%Oban.Job{}` (Oban returns an `Ecto.Changeset`); code that only passes the
    result on to `Oban.insert/1,2` or `insert_all/1,2` does not notice. Invalid options do not
    raise: `Oban.insert/2` then returns `{:error, message}`, as Oban returns an invalid changeset.
  - Timestamps (`inserted_at`, `scheduled_at`, ...) are the strings PostgreSQL's `row_to_json`
    prints, not `DateTime`s; `args`, `meta` have string keys, as after Oban's JSON round trip.

  Options (`new/2`): `worker`, `queue`, `args`, `meta`, `tags`, `max_attempts`, `priority`,
  `scheduled_at` (DateTime), `schedule_in` (seconds or `{n, :minutes}`...), `unique` (`true` or
  Oban's keyword list: `fields`, `keys`, `period` incl. `:infinity`, `states` as a list or a
  group atom, `timestamp`), `replace` (list or keyword by state). The SQL, defaults and unique
  semantics are `Fixture.Job` / `Fixture.Engine`'s.
  """

  alias Fixture.Worker

  defstruct [
    :id,
    :state,
    :queue,
    :worker,
    :args,
    :meta,
    :tags,
    :errors,
    :attempt,
    :attempted_by,
    :max_attempts,
    :priority,
    :attempted_at,
    :cancelled_at,
    :completed_at,
    :discarded_at,
    :inserted_at,
    :scheduled_at,
    :unique,
    :replace,
    :unsaved_error,
    conflict?: false,
    # Fixture-only: the `Fixture.Job` changeset `new/2` built, or `{:invalid, message}`.
    changeset: nil
  ]

  @type t :: %__MODULE__{}

  @option_keys [
    :worker,
    :queue,
    :meta,
    :tags,
    :max_attempts,
    :priority,
    :scheduled_at,
    :schedule_in,
    :unique,
    :replace
  ]

  @doc "Oban.Job.new/2: args plus options; see the moduledoc."
  @spec new(map(), keyword()) :: t()
  def new(args, opts \\ []) when is_map(args) and is_list(opts) do
    params =
      opts
      |> Enum.map(fn {key, value} -> option(key, value) end)
      |> Map.new()
      |> Map.put("args", plain(args))

    changeset =
      try do
        Fixture.Job.new(params)
      rescue
        error in Fixture.Job.Invalid -> {:invalid, error.message}
      end

    case changeset do
      {:invalid, _} ->
        %__MODULE__{args: params["args"], worker: params["worker"], changeset: changeset}

      %{fields: fields} ->
        %__MODULE__{
          state: fields["state"],
          queue: fields["queue"],
          worker: fields["worker"],
          args: fields["args"],
          meta: fields["meta"],
          tags: fields["tags"],
          errors: [],
          attempt: 0,
          max_attempts: fields["max_attempts"],
          priority: fields["priority"],
          scheduled_at: fields["scheduled_at"],
          unique: changeset.unique,
          replace: changeset.replace,
          changeset: changeset
        }
    end
  end

  @doc "The struct for a fixture job (what the executor hands an `Oban.Worker`'s callbacks)."
  @spec from_fixture(Fixture.Job.t()) :: t()
  def from_fixture(%Fixture.Job{row: row} = job) do
    row = row || %{}

    %__MODULE__{
      id: job.id,
      state: job.state,
      queue: job.queue,
      worker: job.worker,
      args: job.args,
      meta: job.meta,
      tags: job.tags,
      errors: row["errors"] || [],
      attempt: job.attempt,
      attempted_by: row["attempted_by"],
      max_attempts: job.max_attempts,
      priority: job.priority,
      attempted_at: row["attempted_at"],
      cancelled_at: row["cancelled_at"],
      completed_at: row["completed_at"],
      discarded_at: row["discarded_at"],
      inserted_at: row["inserted_at"],
      scheduled_at: job.scheduled_at,
      conflict?: job.conflict?,
      unsaved_error: job.unsaved_error
    }
  end

  # Options -----------------------------------------------------------------------------------

  defp option(key, _value) when key not in @option_keys,
    do: {Atom.to_string(key), :unknown_option}

  defp option(:worker, worker), do: {"worker", Worker.to_string(worker)}
  defp option(:queue, queue), do: {"queue", to_string(queue)}
  defp option(:meta, meta), do: {"meta", plain(meta)}
  defp option(:tags, tags), do: {"tags", Enum.map(tags, &to_string/1)}
  defp option(:scheduled_at, %DateTime{} = at), do: {"scheduled_at", DateTime.to_iso8601(at)}
  defp option(:schedule_in, {amount, unit}), do: {"schedule_in", [amount, to_string(unit)]}
  defp option(:unique, unique), do: {"unique", unique_option(unique)}
  defp option(:replace, replace), do: {"replace", replace_option(replace)}
  defp option(key, value), do: {Atom.to_string(key), value}

  defp unique_option(value) when is_boolean(value) or is_nil(value), do: value

  defp unique_option(opts) when is_list(opts) do
    Map.new(opts, fn
      {:period, :infinity} -> {"period", "infinity"}
      {:period, {amount, unit}} -> {"period", [amount, to_string(unit)]}
      {:states, states} when is_atom(states) -> {"states", Atom.to_string(states)}
      {key, list} when is_list(list) -> {Atom.to_string(key), Enum.map(list, &to_string/1)}
      {key, value} when is_atom(value) -> {Atom.to_string(key), Atom.to_string(value)}
      {key, value} -> {Atom.to_string(key), value}
    end)
  end

  defp replace_option(fields) when is_list(fields) do
    if Keyword.keyword?(fields) do
      Map.new(fields, fn {state, list} -> {to_string(state), Enum.map(list, &to_string/1)} end)
    else
      Enum.map(fields, &to_string/1)
    end
  end

  # Oban stores args and meta as JSON: atom keys and values come back as strings.
  defp plain(map), do: map |> Fixture.Json.encode() |> Fixture.Json.decode()
end
