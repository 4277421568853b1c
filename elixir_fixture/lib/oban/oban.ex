defmodule Oban do
  @moduledoc """
  The part of Oban 2.23's public API (lib/oban.ex) that HephaestusOban-style code calls, over the
  fixture's one running instance (`Fixture.Config.get/0`): the `name` argument is accepted and
  ignored, as every fixture job belongs to the instance `Oban`.

  - `insert/1,2`: `Fixture.Engine.insert_job/2` — transaction, unique check (advisory lock, SELECT,
    `conflict?: true` with the existing job), INSERT, `oban_insert` NOTIFY for available jobs
    (inside the caller's transaction when there is one, so it is delivered at COMMIT, as with
    Oban's Postgres notifier). `{:ok, %Oban.Job{}}`, or `{:error, message}` for invalid options.
  - `insert!/1,2`, `insert_all/1,2` (one INSERT, no uniqueness: OSS Basic engine).
  - `cancel_job/1,2` and `cancel_all_jobs/2` (a list of ids here, where Oban takes an Ecto
    query): cancel in the database, pkill the executing ones.
  """

  alias Fixture.{Config, Engine, Signals}

  @type name :: term()

  @spec insert(Oban.Job.t()) :: {:ok, Oban.Job.t()} | {:error, term()}
  def insert(%Oban.Job{} = job), do: insert(Oban, job)

  @spec insert(name(), Oban.Job.t()) :: {:ok, Oban.Job.t()} | {:error, term()}
  def insert(_name, %Oban.Job{changeset: {:invalid, message}}), do: {:error, message}

  def insert(_name, %Oban.Job{changeset: %{} = changeset}) do
    {:ok, Config.get() |> Engine.insert_job(changeset) |> Oban.Job.from_fixture()}
  end

  @spec insert!(Oban.Job.t()) :: Oban.Job.t()
  def insert!(%Oban.Job{} = job), do: insert!(Oban, job)

  @spec insert!(name(), Oban.Job.t()) :: Oban.Job.t()
  def insert!(name, %Oban.Job{} = job) do
    case insert(name, job) do
      {:ok, job} -> job
      {:error, reason} -> raise ArgumentError, "could not insert job: #{inspect(reason)}"
    end
  end

  @spec insert_all([Oban.Job.t()]) :: [Oban.Job.t()]
  def insert_all(jobs) when is_list(jobs), do: insert_all(Oban, jobs)

  @spec insert_all(name(), [Oban.Job.t()]) :: [Oban.Job.t()]
  def insert_all(_name, jobs) when is_list(jobs) do
    changesets =
      for job <- jobs do
        case job.changeset do
          %{} = changeset -> changeset
          {:invalid, message} -> raise ArgumentError, "invalid job: #{message}"
        end
      end

    Config.get() |> Engine.insert_all_jobs(changesets) |> Enum.map(&Oban.Job.from_fixture/1)
  end

  @spec cancel_job(Oban.Job.t() | integer()) :: :ok
  def cancel_job(job_or_id), do: cancel_job(Oban, job_or_id)

  @spec cancel_job(name(), Oban.Job.t() | integer()) :: :ok
  def cancel_job(_name, %Oban.Job{id: id}), do: cancel_job(Oban, id)

  def cancel_job(_name, id) when is_integer(id) do
    Signals.cancel_jobs(Config.get(), [id])
    :ok
  end

  @doc "Oban.cancel_all_jobs/2 for a list of job ids (Oban takes a queryable)."
  @spec cancel_all_jobs(name(), [integer()]) :: {:ok, non_neg_integer()}
  def cancel_all_jobs(_name, []), do: {:ok, 0}

  def cancel_all_jobs(_name, ids) when is_list(ids) do
    %{cancelled: cancelled} = Signals.cancel_jobs(Config.get(), ids)
    {:ok, length(cancelled)}
  end
end
