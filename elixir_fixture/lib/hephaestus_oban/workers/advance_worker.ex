defmodule HephaestusOban.AdvanceWorker do
  @moduledoc """
  hephaestus_oban 0.5.0's AdvanceWorker (lib/hephaestus_oban/workers/advance_worker.ex): queue
  `hephaestus`, max_attempts 20, unique on args key `instance_id`, period infinity, states
  available/scheduled/executing/retryable.

  `perform/1`, step by step as upstream:
  1. config from `{HephaestusOban, :config, args["config_key"]}` (raises when not registered);
  2. `detect_discarded_steps`: discarded `HephaestusOban.ExecuteStepWorker` jobs whose
     `args->>'instance_id'` is this instance — read *before* the transaction;
  3. in one transaction: `pg_advisory_xact_lock(:erlang.phash2(instance_id))`, load the instance,
     read its unprocessed step results, apply them in `inserted_at` order (an `__async__` result
     sets `waiting` + `current_step`; any other result on a waiting instance sets `running` and
     clears `current_step`, then `complete_step` + `activate_transitions`), `check_completion`;
     if a step job was discarded the instance becomes `failed`, else `Engine.advance/1`;
     persist; mark the results processed;
  4. failed: cancel every available/scheduled/executing/retryable job of the instance —
     this job included (pkill) — and return `:ok`; completed/failed/waiting: `:ok`; otherwise one
     `ExecuteStepWorker` job per active step, built with `Oban.Job.new/2` (so *without* the
     worker's unique options), max_attempts from the step's retry config, meta with the
     instance's runtime metadata.

  Upstream defects kept, since the fixture plays the genuine stack: a waiting instance's other
  active steps are not enqueued; a result whose AdvanceWorker insert was deduplicated against
  this executing job, written after step 3 read the pending rows, stays unprocessed; async steps
  are enqueued again when a sibling result makes a waiting instance `running`.
  """

  use Oban.Worker,
    queue: :hephaestus,
    unique: [
      keys: [:instance_id],
      period: :infinity,
      states: [:available, :scheduled, :executing, :retryable]
    ]

  alias Hephaestus.Core.Engine
  alias HephaestusOban.{JobMetadata, RetryConfig, StepResults}

  @execute_step_worker "HephaestusOban.ExecuteStepWorker"
  @cancellable ~w(available scheduled executing retryable)

  @impl Oban.Worker
  def perform(%Oban.Job{args: %{"instance_id" => instance_id} = args}) do
    config = :persistent_term.get({HephaestusOban, :config, args["config_key"]})
    version = Map.get(args, "workflow_version", 1)
    discarded = detect_discarded_steps(config, instance_id)

    result =
      config.repo.transaction(fn ->
        config.repo.query!("SELECT pg_advisory_xact_lock($1)", [:erlang.phash2(instance_id)])

        instance = load_instance(config, instance_id)
        pending = StepResults.pending_for(config.repo, instance_id)
        instance = apply_step_results(instance, pending)

        if discarded != [] do
          instance = %{instance | status: :failed, current_step: nil}
          persist(config, instance)
          StepResults.mark_processed(config.repo, pending)
          {:failed, instance}
        else
          {:ok, instance} = Engine.advance(instance)
          persist(config, instance)
          StepResults.mark_processed(config.repo, pending)
          {:continue, instance}
        end
      end)

    case result do
      {:ok, {:failed, instance}} ->
        cancel_pending_jobs(config, instance)
        :ok

      {:ok, {:continue, %{status: status}}} when status in [:completed, :failed, :waiting] ->
        :ok

      {:ok, {:continue, instance}} ->
        for step <- MapSet.to_list(instance.active_steps),
            do: enqueue_execute_step(config, instance, step, version)

        :ok

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp detect_discarded_steps(config, instance_id) do
    sql =
      "SELECT o0.id FROM #{jobs_table()} AS o0 WHERE (o0.worker = $1) " <>
        "AND (o0.state = 'discarded') AND (o0.args->>'instance_id' = $2)"

    config.repo.query!(sql, [@execute_step_worker, instance_id]).rows
  end

  defp cancel_pending_jobs(config, instance) do
    sql =
      "SELECT o0.id FROM #{jobs_table()} AS o0 WHERE (o0.state::text = ANY($1)) " <>
        "AND (o0.args->>'instance_id' = $2)"

    ids = for [id] <- config.repo.query!(sql, [@cancellable, instance.id]).rows, do: id
    {:ok, _count} = Oban.cancel_all_jobs(config.oban, ids)
    :ok
  end

  defp enqueue_execute_step(config, instance, step, version) do
    retry = RetryConfig.resolve(step, instance.workflow)

    meta =
      JobMetadata.build(instance.workflow, instance.id,
        step_ref: step,
        runtime_metadata: instance.runtime_metadata
      )

    args = %{
      "instance_id" => instance.id,
      "config_key" => config.key,
      "step_ref" => to_string(step),
      "workflow" => to_string(instance.workflow),
      "workflow_version" => version
    }

    job =
      Oban.Job.new(
        args,
        [
          queue: :hephaestus,
          worker: HephaestusOban.ExecuteStepWorker,
          max_attempts: retry.max_attempts
        ] ++ meta
      )

    Oban.insert(config.oban, job)
    :ok
  end

  defp apply_step_results(instance, []), do: instance

  defp apply_step_results(instance, pending) do
    pending
    |> Enum.reduce(instance, fn result, acc ->
      step = String.to_existing_atom(result.step_ref)

      if result.event == "__async__" do
        %{acc | status: :waiting, current_step: step}
      else
        event = String.to_existing_atom(result.event)
        acc = if acc.status == :waiting, do: %{acc | status: :running, current_step: nil}, else: acc

        acc
        |> Engine.complete_step(step, event, result.context_updates, result.metadata_updates || %{})
        |> Engine.activate_transitions(step, event)
      end
    end)
    |> Engine.check_completion()
  end

  @doc false
  def load_instance(config, instance_id) do
    case HephaestusOban.Runner.storage_call(config.storage, :get, [instance_id]) do
      {:ok, instance} -> instance
      {:error, :not_found} -> raise "workflow instance not found: #{instance_id}"
    end
  end

  defp persist(config, instance),
    do: HephaestusOban.Runner.storage_call(config.storage, :put, [instance])

  defp jobs_table, do: Fixture.Config.table(Fixture.Config.get(), "oban_jobs")
end
