defmodule ObanBridge.PythonWorkflow do
  @moduledoc """
  Resume a waiting step of a Python-owned workflow from Elixir.

  The Python runner (oban-bridge's `WorkflowRunner`) runs HephaestusOban's three workers, under
  their names, on a queue of its own. Resuming is what its own `resume` does: insert a
  `HephaestusOban.ResumeWorker` job on that queue, args `instance_id`, `step_ref`, `event`,
  `config_key`, `workflow`, `workflow_version`, `max_attempts` 3, meta and tags as
  `HephaestusOban.JobMetadata.build/3` would give them for the step.

      ObanBridge.PythonWorkflow.resume("order::o-1", :shipped,
        queue: "bridge_workflows", config_key: "bridge")

  Options: `step_ref` (default: the instance's `current_step`), `queue` ("bridge_workflows"),
  `config_key` ("bridge"), `oban`, `tags` and `metadata` (the Python workflow's own, if it has
  any). Returns `{:ok, %Oban.Job{}}`, `{:error, :instance_not_found}` or
  `{:error, :not_waiting}`.
  """

  alias ObanBridge.Protocol

  @spec resume(String.t(), atom() | String.t(), keyword()) ::
          {:ok, Oban.Job.t()} | {:error, term()}
  def resume(instance_id, event, opts \\ []) when is_binary(instance_id) do
    repo = Protocol.setting(:repo)

    sql =
      "SELECT workflow, workflow_version, status, state->>'current_step' " <>
        "FROM #{Protocol.table("workflow_instances")} WHERE id = $1::text"

    case repo.query!(sql, [instance_id]).rows do
      [] ->
        {:error, :instance_not_found}

      [[workflow, version, status, current]] ->
        step_ref = opts |> Keyword.get(:step_ref, current) |> then(&(&1 && to_string(&1)))

        if status != "waiting" or is_nil(step_ref) do
          {:error, :not_waiting}
        else
          insert(instance_id, workflow, version, step_ref, to_string(event), opts)
        end
    end
  end

  defp insert(instance_id, workflow, version, step_ref, event, opts) do
    short = fn module -> module |> String.split(".") |> List.last() |> Macro.underscore() end

    meta =
      opts
      |> Keyword.get(:metadata, %{})
      |> Protocol.stringify()
      |> Map.merge(%{
        "heph_workflow" => short.(workflow),
        "instance_id" => instance_id,
        "workflow_version" => version,
        "step" => short.(step_ref)
      })

    args = %{
      "instance_id" => instance_id,
      "step_ref" => step_ref,
      "event" => event,
      "config_key" => Keyword.get(opts, :config_key, "bridge"),
      "workflow" => workflow,
      "workflow_version" => version
    }

    job =
      Oban.Job.new(args,
        worker: "HephaestusOban.ResumeWorker",
        queue: Keyword.get(opts, :queue, "bridge_workflows"),
        max_attempts: 3,
        meta: meta,
        tags: Enum.uniq([short.(workflow) | Keyword.get(opts, :tags, [])])
      )

    Oban.insert(Keyword.get(opts, :oban) || Protocol.setting(:oban, Oban), job)
  end
end
