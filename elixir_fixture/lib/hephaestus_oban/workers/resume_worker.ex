defmodule HephaestusOban.ResumeWorker do
  @moduledoc """
  hephaestus_oban 0.5.0's ResumeWorker (lib/hephaestus_oban/workers/resume_worker.ex): queue
  `hephaestus`, max_attempts 3, no uniqueness. `perform/1` writes, in one transaction, the step
  result (`step_ref`, the resume `event`, context updates `%{}`) and an AdvanceWorker job with
  the args/meta/tags `insert_result_and_advance/7` builds — the same shape an outside process
  uses to complete a waiting step (golden external-step-completion s3a). Returns `:ok` whatever
  the transaction gave, as upstream.
  """

  use Oban.Worker, queue: :hephaestus, max_attempts: 3

  alias HephaestusOban.{AdvanceWorker, JobMetadata, StepResults}

  @impl Oban.Worker
  def perform(%Oban.Job{args: %{"instance_id" => id, "step_ref" => step, "event" => event} = args}) do
    %{"workflow" => workflow} = args
    config = :persistent_term.get({HephaestusOban, :config, args["config_key"]})
    version = Map.get(args, "workflow_version", 1)
    insert_result_and_advance(config, id, step, event, %{}, workflow, version)
    :ok
  end

  @spec insert_result_and_advance(
          map(),
          String.t(),
          String.t(),
          String.t(),
          map(),
          String.t(),
          integer()
        ) ::
          {:ok, Oban.Job.t()} | {:error, term()}
  def insert_result_and_advance(config, id, step_ref, event, updates, workflow, version) do
    meta = JobMetadata.build(JobMetadata.resolve_workflow(workflow), id, step_ref: step_ref)

    config.repo.transaction(fn ->
      :ok = StepResults.insert(config.repo, id, step_ref, event, updates, %{}, version)

      %{
        "instance_id" => id,
        "config_key" => config.key,
        "workflow" => workflow,
        "workflow_version" => version
      }
      |> AdvanceWorker.new(meta)
      |> then(&Oban.insert!(config.oban, &1))
    end)
  end
end
