defmodule HephaestusOban.JobMetadata do
  @moduledoc """
  hephaestus_oban 0.5.0's job meta and tags (lib/hephaestus_oban/job_metadata.ex): meta is the
  workflow's `__metadata__/0`, then the runtime metadata, then the system keys
  `heph_workflow` (last module segment, underscored), `instance_id`, `workflow_version` (the
  workflow's `__version__/0`, not the instance's) and, with a step, `step`; tags are
  `[heph_workflow | __tags__()]` without duplicates.
  """

  @spec build(module(), String.t(), keyword()) :: [meta: map(), tags: [String.t()]]
  def build(workflow, instance_id, opts \\ []) do
    step_ref = Keyword.get(opts, :step_ref)
    name = short_name(workflow)

    system =
      %{"heph_workflow" => name, "instance_id" => instance_id}
      |> Map.put("workflow_version", safe_call(workflow, :__version__, 1))
      |> then(fn meta ->
        if step_ref, do: Map.put(meta, "step", short_name(step_ref)), else: meta
      end)

    meta =
      workflow
      |> safe_call(:__metadata__, %{})
      |> Map.merge(Keyword.get(opts, :runtime_metadata, %{}))
      |> Map.merge(system)

    [meta: meta, tags: Enum.uniq([name | safe_call(workflow, :__tags__, [])])]
  end

  @spec resolve_workflow(String.t()) :: module()
  def resolve_workflow(workflow) when is_binary(workflow), do: String.to_existing_atom(workflow)

  defp short_name(module) when is_atom(module),
    do: module |> Module.split() |> List.last() |> Macro.underscore()

  defp short_name(text) when is_binary(text),
    do: text |> String.split(".") |> List.last() |> Macro.underscore()

  defp safe_call(module, function, default) do
    _ = Code.ensure_loaded(module)
    if function_exported?(module, function, 0), do: apply(module, function, []), else: default
  end
end

defmodule HephaestusOban.RetryConfig do
  @moduledoc """
  hephaestus_oban's retry config (lib/hephaestus_oban/retry_config.ex): the step's
  `retry_config/0`, else the workflow's `default_retry_config/0`, else
  `%{max_attempts: 5, backoff: :exponential, max_backoff: 60_000}`. Only `max_attempts` is used
  (as the ExecuteStepWorker job's); as upstream, a step module not loaded yet counts as having
  no `retry_config/0`.
  """
  @default %{max_attempts: 5, backoff: :exponential, max_backoff: 60_000}

  @spec resolve(module(), module()) :: map()
  def resolve(step, workflow) do
    cond do
      function_exported?(step, :retry_config, 0) -> step.retry_config()
      function_exported?(workflow, :default_retry_config, 0) -> workflow.default_retry_config()
      true -> @default
    end
  end

  @spec default() :: map()
  def default, do: @default
end
