defmodule ObanBridge do
  @moduledoc """
  The Elixir side of oban-bridge: Python workers and workflows that share one PostgreSQL
  database with your Oban and Hephaestus app.

  The database is the bridge. A job row names its worker as a string and sits in a queue; the
  nodes serving that queue run it, whatever their language. This package gives an Elixir app
  what it needs to meet the Python side halfway:

  - `enqueue_python/3` and `python_job/3`: a job for a Python worker, by its name, in its queue;
  - `ObanBridge.DelegatedStep`: a Hephaestus step whose body is a Python function;
  - `ObanBridge.StepWorker`: runs allow-listed Hephaestus steps for Python workflows;
  - `ObanBridge.PythonWorkflow`: the declaration of each Python-owned workflow, and resuming it;
  - `ObanBridge.Protocol`: the configuration and the checks the others share.

  Configuration (`config/config.exs`), every key read at run time:

      config :oban_bridge,
        repo: MyApp.Repo,                   # the repo Oban and HephaestusOban use
        oban: Oban,                         # your Oban instance name
        prefix: "public",                   # schema of oban_jobs and the workflow tables
        config_key: "Elixir.MyApp.Heph",    # your HephaestusOban runner's config key
        steps: [MyApp.Steps.Charge],        # the only steps ObanBridge.StepWorker may run
        python_worker_queues: %{"myapp.mail.Send" => "python_mail"}  # enqueue_python/3's queues
  """

  @doc """
  Enqueue a job for the Python worker named `worker` (its registered name, by default
  `module.QualName`, e.g. `"badge_forge.generator.GenerateBadge"`).

  The job goes to the worker's queue: `queue:`, else the worker's entry in
  `config :oban_bridge, python_worker_queues: %{name => queue}`. There is no default on purpose:
  the Python side routes by queue, and a queue your Elixir nodes also serve (`"default"`) hands
  the job to an Elixir node, where no module of that name exists and Oban discards it. Use the
  queue the Python worker declares (`@worker(queue=...)`) and that only Python nodes serve.

  `args` must be a JSON map (Python reads it with string keys). Options besides `queue:`:
  `oban:` (the instance; default `config :oban_bridge, :oban`, else `Oban`) and anything
  `Oban.Job.new/2` takes (`max_attempts`, `priority`, `tags`, `meta`, `scheduled_at`,
  `schedule_in`, `unique`, `replace`). Returns what `Oban.insert/2` returns.

      ObanBridge.enqueue_python("badge_forge.generator.GenerateBadge", %{badge_id: 7},
        queue: "badges")
  """
  @spec enqueue_python(String.t(), map(), keyword()) :: {:ok, Oban.Job.t()} | {:error, term()}
  def enqueue_python(worker, args, opts \\ []) do
    {oban, opts} = Keyword.pop(opts, :oban)
    job = python_job(worker, args, opts)
    Oban.insert(oban || ObanBridge.Protocol.setting(:oban, Oban), job)
  end

  @doc """
  The job `enqueue_python/3` inserts, not inserted: for `Oban.insert_all/2` or an `Ecto.Multi`
  (`Oban.insert(multi, name, job)`), so the job commits with the rest of your transaction.
  Same arguments and queue rules as `enqueue_python/3` (without `oban:`).
  """
  @spec python_job(String.t(), map(), keyword()) :: Oban.Job.changeset() | Oban.Job.t()
  def python_job(worker, args, opts \\ []) do
    unless is_binary(worker) and worker != "" and not String.starts_with?(worker, "Elixir.") do
      raise ArgumentError,
            "a Python worker is named by a string such as \"myapp.jobs.Send\", got: " <>
              "#{inspect(worker)} (an Elixir module is an Elixir worker: use its new/2)"
    end

    unless is_map(args) and not is_struct(args) do
      raise ArgumentError, "args for #{worker} must be a map, got: #{inspect(args)}"
    end

    {queue, opts} = Keyword.pop(opts, :queue)
    Oban.Job.new(args, [worker: worker, queue: queue_of(worker, queue)] ++ opts)
  end

  defp queue_of(_worker, queue) when is_binary(queue) and queue != "", do: queue
  defp queue_of(_worker, queue) when is_atom(queue) and not is_nil(queue), do: queue

  defp queue_of(worker, nil) do
    queues = ObanBridge.Protocol.setting(:python_worker_queues, %{})

    case Map.get(queues, worker) do
      nil ->
        raise ArgumentError,
              "no queue for the Python worker #{inspect(worker)}: pass queue: (the queue its " <>
                "@worker(queue=...) declares, served only by Python nodes) or add it to " <>
                "config :oban_bridge, python_worker_queues: %{#{inspect(worker)} => \"...\"}"

      queue ->
        queue_of(worker, queue)
    end
  end

  defp queue_of(worker, queue),
    do: raise(ArgumentError, "queue for #{worker} must be a string, got: #{inspect(queue)}")
end
