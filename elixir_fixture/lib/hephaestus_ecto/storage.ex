defmodule HephaestusEcto.Storage do
  @moduledoc """
  hephaestus_ecto 0.3.0's storage (lib/hephaestus_ecto/storage.ex) over `workflow_instances` in
  the connected prefix, with the SQL Ecto runs for it:

  - `start_link(repo:, name:)` stores the repo in `:persistent_term` and returns `:ignore`.
  - `put/1,2`: upsert; `inserted_at` and `updated_at` are `NaiveDateTime.utc_now/0` truncated to
    the second (Ecto's `timestamps()`); on conflict only `workflow`, `status`, `state` and
    `updated_at` change (`workflow_version` and `inserted_at` keep the first write's). As
    upstream, a state its changeset rejects (status outside pending..failed, version < 1) is
    silently not written, and `:ok` is returned all the same.
  - `get/1,2`: `{:ok, instance}` through `HephaestusEcto.Serializer.from_db/5` (which raises on
    names that are not atoms here), or `{:error, :not_found}`. Like `Repo.get/2`, it loads the
    whole record first, `inserted_at`/`updated_at` included (`Fixture.EctoTimestamps.load!/2`:
    an `infinity` there raises as Postgrex does); `record/2` returns that record.
  - `put/1,2` dumps the timestamps as Ecto and Postgrex do (`Fixture.EctoTimestamps.dump!/2`):
    into `timestamptz` columns it raises `DBConnection.EncodeError` and writes nothing.
  - `query/1,2` with `id`, `status`, `status_in`, `workflow`, `workflow_version`,
    `workflow_family`; `delete/1,2`.
  """

  alias HephaestusEcto.Serializer

  @statuses ~w(pending running waiting completed failed)
  alias Fixture.EctoTimestamps

  # The schema's fields in its order (Repo.get selects them all): timestamps() last.
  @columns "w0.id, w0.workflow, w0.status, w0.workflow_version, w0.state::text, " <>
             EctoTimestamps.select("w0.inserted_at") <>
             ", " <> EctoTimestamps.select("w0.updated_at")

  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.get(opts, :name, __MODULE__)},
      start: {__MODULE__, :start_link, [opts]},
      restart: :temporary
    }
  end

  @spec start_link(keyword()) :: :ignore
  def start_link(opts \\ []) do
    :persistent_term.put(
      repo_key(Keyword.get(opts, :name, __MODULE__)),
      Keyword.fetch!(opts, :repo)
    )

    :ignore
  end

  @spec get(String.t()) :: {:ok, Hephaestus.Core.Instance.t()} | {:error, :not_found}
  def get(id), do: get(__MODULE__, id)

  def get(name, id) when is_binary(id) do
    case record(name, id) do
      nil -> {:error, :not_found}
      record -> {:ok, record_to_instance(record)}
    end
  end

  @doc """
  The `HephaestusEcto.Schema.Instance` record `Repo.get/2` loads (a map of its fields: `state`
  decoded, `inserted_at`/`updated_at` as Ecto's `:naive_datetime` loads them), or nil.
  """
  @spec record(term(), String.t()) :: map() | nil
  def record(name, id) when is_binary(id) do
    case repo(name).query!("SELECT #{@columns} FROM #{table()} AS w0 WHERE (w0.id = $1)", [id]).rows do
      [row] -> load_record(row)
      [] -> nil
    end
  end

  @spec put(Hephaestus.Core.Instance.t()) :: :ok
  def put(instance), do: put(__MODULE__, instance)

  def put(name, %Hephaestus.Core.Instance{} = instance) do
    {id, workflow, status, version, state} = Serializer.to_db(instance)

    if status in @statuses and is_integer(version) and version > 0 do
      now = NaiveDateTime.utc_now() |> NaiveDateTime.truncate(:second)
      # Postgrex encodes the parameters in order, by the types the prepared insert reports.
      for type <- column_types(name), do: EctoTimestamps.dump!(now, type)

      sql = """
      INSERT INTO #{table()} AS w0 (id, workflow, status, workflow_version, state, inserted_at,
        updated_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
      ON CONFLICT (id) DO UPDATE SET workflow = EXCLUDED.workflow, status = EXCLUDED.status,
        state = EXCLUDED.state, updated_at = EXCLUDED.updated_at
      """

      repo(name).query!(sql, [id, workflow, status, version, Fixture.Json.encode(state), now, now])
    end

    :ok
  end

  @spec delete(String.t()) :: :ok
  def delete(id), do: delete(__MODULE__, id)

  def delete(name, id) when is_binary(id) do
    repo(name).query!("DELETE FROM #{table()} AS w0 WHERE w0.id = $1", [id])
    :ok
  end

  @spec query(keyword()) :: [Hephaestus.Core.Instance.t()]
  def query(filters), do: query(__MODULE__, filters)

  def query(name, filters) when is_list(filters) do
    {conditions, params} =
      Enum.reduce(filters, {[], []}, fn filter, {conds, params} ->
        n = length(params) + 1

        case filter do
          {:id, id} when is_binary(id) ->
            {["w0.id = $#{n}" | conds], params ++ [id]}

          {:status, s} ->
            {["w0.status = $#{n}" | conds], params ++ [Atom.to_string(s)]}

          {:status_in, list} ->
            {["w0.status = ANY($#{n})" | conds], params ++ [Enum.map(list, &Atom.to_string/1)]}

          {:workflow, w} ->
            {["w0.workflow = $#{n}" | conds], params ++ [Atom.to_string(w)]}

          {:workflow_version, v} when is_integer(v) ->
            {["w0.workflow_version = $#{n}" | conds], params ++ [v]}

          {:workflow_family, prefix} when is_binary(prefix) ->
            pattern = (prefix |> String.replace("%", "\\%") |> String.replace("_", "\\_")) <> "%"
            {["w0.workflow LIKE $#{n}" | conds], params ++ [pattern]}

          _ignored ->
            {conds, params}
        end
      end)

    where =
      if conditions == [], do: "", else: "WHERE " <> Enum.join(Enum.reverse(conditions), " AND ")

    # Repo.all loads every record before HephaestusEcto maps them to instances.
    repo(name).query!("SELECT #{@columns} FROM #{table()} AS w0 #{where}", params).rows
    |> Enum.map(&load_record/1)
    |> Enum.map(&record_to_instance/1)
  end

  @doc "The row as stored (`row_to_json`), or nil: what the Python side reads."
  @spec row(term(), String.t()) :: map() | nil
  def row(name, id) do
    sql = "SELECT row_to_json(w0)::text FROM #{table()} AS w0 WHERE w0.id = $1"

    case repo(name).query!(sql, [id]).rows do
      [[json]] -> Fixture.Json.decode(json)
      [] -> nil
    end
  end

  # Postgrex decodes the columns in order, then Ecto loads the fields.
  defp load_record([id, workflow, status, version, state, i_type, inserted, u_type, updated]) do
    state = Fixture.Json.decode(state)

    %{
      id: id,
      workflow: workflow,
      status: status,
      workflow_version: version,
      state: state,
      inserted_at: EctoTimestamps.load!(i_type, inserted),
      updated_at: EctoTimestamps.load!(u_type, updated)
    }
  end

  # HephaestusEcto.Storage.record_to_instance/1.
  defp record_to_instance(record),
    do:
      Serializer.from_db(
        record.id,
        record.workflow,
        record.status,
        record.workflow_version,
        record.state
      )

  defp column_types(name) do
    for [type] <- repo(name).query!(EctoTimestamps.column_types_sql(), [table()]).rows, do: type
  end

  defp table, do: Fixture.Config.table(Fixture.Config.get(), "workflow_instances")

  defp repo(name), do: :persistent_term.get(repo_key(name))

  defp repo_key(name), do: {__MODULE__, :repo, name}
end
