defmodule ObanBridge.StepWorker do
  @moduledoc """
  Runs an Elixir Hephaestus step for a Python-owned workflow (oban-bridge's `elixir_step`).

  The Python runner inserts this job (queue chosen on the Python side, e.g. "default") in the
  same transaction as the step's `__async__` result. This worker:

  1. resolves `args["step_ref"]` **only** against `config :oban_bridge, steps: [...]` — a module
     not listed is never called (the job is discarded);
  2. calls `execute(instance, config, context)` with a `%Hephaestus.Core.Instance{}` whose
     `workflow` is nil (the Python workflow is no module here) and whose context keys are
     existing atoms where such atoms exist (others stay strings);
  3. checks the outcome against what the Python step declared (`events`, `context_keys`);
  4. completes the step: under `pg_advisory_xact_lock(:erlang.phash2(instance_id))`, once the
     step's `__async__` is processed, `HephaestusOban.StepResults.insert/7` plus the Python
     runner's `HephaestusOban.AdvanceWorker` on the runner's queue (skipped when an unstarted one
     exists), one transaction; Oban's insert NOTIFY goes out at commit.

  Failure policy, mirroring the Python side: `{:error, _}` or a raise is retried; on the last
  attempt the declared `failure_event` completes the step, else the Python instance is failed
  (status failed, current step cleared, its pending jobs cancelled). A violation (undeclared
  event or key, `{:async}`, an unknown module) is never written and applies the same policy.
  A gone or finished instance, or a step that is no longer active: nothing to do.
  """

  use Oban.Worker, queue: :default, max_attempts: 5

  alias ObanBridge.Protocol

  @settle_ms 10_000
  @snooze_s 5

  @impl Oban.Worker
  def perform(%Oban.Job{args: %{"protocol" => 1} = args} = job) do
    repo = Protocol.setting(:repo)

    case resolve(args["step_ref"]) do
      {:ok, module} ->
        case precheck(repo, args) do
          :run -> run(job, repo, module, args)
          {:noop, reason} -> {:ok, reason}
        end

      {:error, reason} ->
        failure_policy(job, repo, args)
        {:discard, reason}
    end
  end

  def perform(%Oban.Job{args: args}),
    do: {:discard, "not an oban-bridge protocol 1 job: #{inspect(Map.get(args, "protocol"))}"}

  defp resolve(step_ref) when is_binary(step_ref) do
    case Enum.find(Protocol.setting(:steps, []), &(to_string(&1) == step_ref)) do
      nil -> {:error, "#{step_ref} is not in config :oban_bridge, :steps (the allow-list)"}
      module -> {:ok, module}
    end
  end

  defp resolve(other), do: {:error, "args.step_ref must be a module name, got: #{inspect(other)}"}

  defp precheck(repo, args) do
    {:ok, state} =
      repo.transaction(fn ->
        Protocol.step_state(repo, args["instance_id"], args["step_ref"], false)
      end)

    if state in [:gone, :finished, :inactive, :recorded], do: {:noop, state}, else: :run
  end

  defp run(job, repo, module, args) do
    instance = %Hephaestus.Core.Instance{
      id: args["instance_id"],
      workflow: nil,
      workflow_version: args["workflow_version"],
      status: :waiting,
      current_step: module,
      context: %Hephaestus.Core.Context{
        initial: Protocol.atomize(args["context"]["initial"] || %{}),
        steps: Protocol.atomize(args["context"]["steps"] || %{})
      }
    }

    config = args["config"] && Protocol.atomize(args["config"])

    try do
      module.execute(instance, config, instance.context)
    rescue
      error ->
        if last_attempt?(job), do: failure_policy(job, repo, args)
        reraise error, __STACKTRACE__
    else
      {:ok, event} -> complete(job, repo, args, event, %{}, %{})
      {:ok, event, updates} -> complete(job, repo, args, event, updates, %{})
      {:ok, event, updates, meta} -> complete(job, repo, args, event, updates, meta)
      {:error, reason} -> failed(job, repo, args, reason)
      other -> violation(job, repo, args, "#{inspect(module)} returned #{inspect(other)}")
    end
  end

  defp failed(job, repo, args, reason) do
    if last_attempt?(job), do: failure_policy(job, repo, args)
    {:error, reason}
  end

  defp violation(job, repo, args, message) do
    failure_policy(job, repo, args)
    {:discard, message}
  end

  defp last_attempt?(%Oban.Job{attempt: attempt, max_attempts: max}), do: attempt >= max

  defp complete(job, repo, args, event, updates, meta) do
    case Protocol.check_outcome(args, event, updates) do
      {:ok, event, updates} ->
        meta = Protocol.stringify(meta)

        case settle(job, repo, args, event, updates, meta) do
          :not_ready -> {:snooze, @snooze_s}
          verdict -> {:ok, verdict}
        end

      {:violation, message} ->
        violation(job, repo, args, message)
    end
  end

  # Each try is its own transaction: the lock is never held while waiting for the Python
  # runner to process the step's __async__ result.
  defp settle(job, repo, args, event, updates, meta, waited \\ 0, pause \\ 20) do
    {:ok, verdict} =
      repo.transaction(fn ->
        Protocol.lock(repo, args["instance_id"])

        case Protocol.step_state(repo, args["instance_id"], args["step_ref"], false) do
          :ready ->
            :ok =
              HephaestusOban.StepResults.insert(
                repo,
                args["instance_id"],
                args["step_ref"],
                event,
                updates,
                meta,
                args["workflow_version"]
              )

            oban = Protocol.setting(:oban, Oban)
            :ok = Protocol.enqueue_advance(oban, repo, args, job.meta, job.tags)
            :completed

          other ->
            other
        end
      end)

    if verdict == :not_ready and waited < @settle_ms do
      Process.sleep(pause)
      settle(job, repo, args, event, updates, meta, waited + pause, min(pause * 2, 250))
    else
      verdict
    end
  end

  defp failure_policy(job, repo, args) do
    failure_event = is_map(args) && args["failure_event"]

    completed? =
      is_binary(failure_event) and
        settle(job, repo, args, failure_event, %{}, %{}) in [
          :completed,
          :gone,
          :finished,
          :inactive,
          :recorded
        ]

    unless completed? or not is_binary(args["instance_id"]) or not is_binary(args["step_ref"]) do
      oban = Protocol.setting(:oban, Oban)

      {:ok, _} =
        repo.transaction(fn ->
          Protocol.lock(repo, args["instance_id"])

          case Protocol.step_state(repo, args["instance_id"], args["step_ref"], false) do
            state when state in [:ready, :not_ready] ->
              Protocol.fail_instance(oban, repo, args["instance_id"], job.id)

            _noop ->
              :ok
          end
        end)
    end

    :ok
  end
end
