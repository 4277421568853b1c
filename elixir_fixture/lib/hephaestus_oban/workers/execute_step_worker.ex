defmodule HephaestusOban.ExecuteStepWorker do
  @moduledoc """
  hephaestus_oban 0.5.0's ExecuteStepWorker (lib/hephaestus_oban/workers/execute_step_worker.ex):
  queue `hephaestus`, unique on `instance_id` + `step_ref` (only for jobs built with `new/2`;
  AdvanceWorker does not, see there), max_attempts set per job from the step's retry config.

  `perform/1`: an unprocessed step result for the step already exists ⇒
  `{:ok, :already_recorded}`; else load the instance (raises for names that are not atoms: golden
  s3b), run the step through `Engine.execute_step/2` and, for `{:ok, ...}` / `{:async}` (event
  `"__async__"`), insert its step result and an AdvanceWorker job in one transaction (the insert
  is dropped on conflict, the advance job may be deduplicated against one already executing —
  both as upstream). `{:error, reason}` is returned to Oban as is: retried, then discarded, and
  nothing tells the workflow (upstream's FailureHandler never fires on Oban 2.23).
  """

  use Oban.Worker,
    queue: :hephaestus,
    unique: [
      keys: [:instance_id, :step_ref],
      period: :infinity,
      states: [:available, :scheduled, :executing, :retryable]
    ]

  alias Hephaestus.Core.Engine
  alias HephaestusOban.{AdvanceWorker, JobMetadata, StepResults}

  @impl Oban.Worker
  def perform(%Oban.Job{args: %{"instance_id" => id, "step_ref" => step_ref} = args}) do
    %{"workflow" => workflow} = args
    config = :persistent_term.get({HephaestusOban, :config, args["config_key"]})
    version = Map.get(args, "workflow_version", 1)

    if StepResults.exists?(config.repo, id, step_ref) do
      {:ok, :already_recorded}
    else
      instance = AdvanceWorker.load_instance(config, id)
      step = String.to_existing_atom(step_ref)

      case Engine.execute_step(instance, step) do
        {:ok, event} ->
          record(config, id, step_ref, event, %{}, %{}, workflow, version)

        {:ok, event, updates} ->
          record(config, id, step_ref, event, updates, %{}, workflow, version)

        {:ok, event, updates, meta} ->
          record(config, id, step_ref, event, updates, meta, workflow, version)

        {:async} ->
          record(config, id, step_ref, "__async__", %{}, %{}, workflow, version)

        {:error, reason} ->
          {:error, reason}
      end
    end
  end

  defp record(config, id, step_ref, event, updates, metadata, workflow, version) do
    meta = JobMetadata.build(JobMetadata.resolve_workflow(workflow), id, step_ref: step_ref)

    transaction =
      config.repo.transaction(fn ->
        :ok =
          StepResults.insert(
            config.repo,
            id,
            step_ref,
            to_string(event),
            updates,
            metadata,
            version
          )

        args = %{
          "instance_id" => id,
          "config_key" => config.key,
          "workflow" => workflow,
          "workflow_version" => version
        }

        {:ok, _job} = Oban.insert(config.oban, AdvanceWorker.new(args, meta))
        :ok
      end)

    case transaction do
      {:ok, :ok} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end
end
