defmodule Hephaestus.Core.Engine do
  @moduledoc """
  hephaestus_core 0.3.1's pure engine (lib/hephaestus/core/engine.ex), function for function:
  `advance/1` (a pending instance activates `start/0`; waiting or busy instances are returned
  as they are; otherwise completion is checked), `execute_step/2` (the step's `execute/3` with
  its config and the context), `complete_step/5` (active → completed, updates under the step's
  context key, metadata merged, config dropped), `resume_step/3`, `check_completion/1` (no
  active steps and not waiting ⇒ `:completed`) and `activate_transitions/3` (`transit/3`; a
  `FunctionClauseError` of `transit/3` itself means no transition; a target is activated only
  when all its predecessors are completed — the fan-in join).
  """

  alias Hephaestus.Core.{Context, Instance}

  @spec advance(Instance.t()) :: {:ok, Instance.t()} | {:error, term()}
  def advance(%Instance{} = instance) do
    instance = ensure_started(instance)

    cond do
      instance.status == :waiting -> {:ok, instance}
      MapSet.size(instance.active_steps) > 0 -> {:ok, instance}
      true -> {:ok, check_completion(instance)}
    end
  end

  @spec execute_step(Instance.t(), module()) :: Hephaestus.Steps.Step.result()
  def execute_step(%Instance{} = instance, step_module) when is_atom(step_module) do
    _ = Code.ensure_compiled(step_module)

    unless function_exported?(step_module, :execute, 3),
      do: raise("#{inspect(step_module)} must implement execute/3")

    step_module.execute(instance, Map.get(instance.step_configs, step_module), instance.context)
  end

  @spec complete_step(Instance.t(), module(), atom(), map(), map()) :: Instance.t()
  def complete_step(instance, step_module, event, context_updates, metadata_updates \\ %{})

  def complete_step(%Instance{} = instance, step_module, _event, updates, metadata)
      when is_atom(step_module) and is_map(updates) and is_map(metadata) do
    key = context_key(step_module)

    %{
      instance
      | active_steps: MapSet.delete(instance.active_steps, step_module),
        completed_steps: MapSet.put(instance.completed_steps, step_module),
        context: Context.put_step_result(instance.context, key, updates),
        runtime_metadata: Map.merge(instance.runtime_metadata, metadata),
        step_configs: Map.delete(instance.step_configs, step_module)
    }
  end

  @spec resume_step(Instance.t(), module(), atom()) :: Instance.t()
  def resume_step(%Instance{status: :waiting} = instance, step_module, event) do
    instance
    |> complete_step(step_module, event, %{})
    |> activate_transitions(step_module, event)
    |> Map.merge(%{status: :running, current_step: nil})
  end

  def resume_step(%Instance{} = instance, _step_module, _event), do: instance

  @spec check_completion(Instance.t()) :: Instance.t()
  def check_completion(%Instance{} = instance) do
    if MapSet.size(instance.active_steps) == 0 and instance.status != :waiting,
      do: %{instance | status: :completed, current_step: nil},
      else: instance
  end

  @spec activate_transitions(Instance.t(), module(), atom()) :: Instance.t()
  def activate_transitions(%Instance{} = instance, from, event)
      when is_atom(from) and is_atom(event) do
    case transit(instance.workflow, from, event, instance.context) do
      nil ->
        instance

      targets when is_list(targets) ->
        Enum.reduce(targets, instance, fn target, acc -> activate(acc, target) end)

      target ->
        activate(instance, target)
    end
  end

  @doc "The context key of a step: `step_key/0`, else the last module segment underscored."
  @spec context_key(module()) :: atom()
  def context_key(step_module) do
    _ = Code.ensure_compiled(step_module)

    if function_exported?(step_module, :step_key, 0) do
      step_module.step_key()
    else
      step_module |> Module.split() |> List.last() |> Macro.underscore() |> String.to_atom()
    end
  end

  defp transit(workflow, from, event, context) do
    workflow.transit(from, event, context)
  rescue
    error in FunctionClauseError ->
      if error.module == workflow and error.function == :transit and error.arity == 3,
        do: nil,
        else: reraise(error, __STACKTRACE__)
  end

  defp activate(instance, {step, config}) when is_atom(step), do: activate(instance, step, config)
  defp activate(instance, step) when is_atom(step), do: activate(instance, step, nil)

  defp activate(instance, step, config) do
    if MapSet.subset?(instance.workflow.__predecessors__(step), instance.completed_steps) do
      %{
        instance
        | active_steps: MapSet.put(instance.active_steps, step),
          step_configs: put_config(instance.step_configs, step, config)
      }
    else
      instance
    end
  end

  defp ensure_started(%Instance{status: :pending} = instance) do
    {step, config} =
      case instance.workflow.start() do
        {step, config} -> {step, config}
        step -> {step, nil}
      end

    %{
      instance
      | status: :running,
        current_step: step,
        active_steps: MapSet.put(instance.active_steps, step),
        step_configs: put_config(instance.step_configs, step, config)
    }
  end

  defp ensure_started(instance), do: instance

  defp put_config(configs, _step, nil), do: configs
  defp put_config(configs, step, config), do: Map.put(configs, step, config)
end
