defmodule HephaestusEcto.Serializer do
  @moduledoc """
  hephaestus_ecto 0.3.0's serializer (lib/hephaestus_ecto/serializer.ex), same format:
  `to_db/1` gives `{id, workflow, status, workflow_version, state}` where `state` has
  `current_step` (module string or nil), `context` (`%{"initial" => ..., "steps" => %{"<key>" =>
  ...}}`, atom keys made strings recursively, also inside lists), `step_configs`, `active_steps`
  and `completed_steps` (sorted module strings), `execution_history` and `runtime_metadata`.

  `from_db/5` is the inverse and, like upstream, uses `String.to_existing_atom/1` on the
  workflow, the status, every module string (each module also `Code.ensure_loaded!/1`), every
  step key and every string key of `context.initial` and `context.steps`, recursively: one name
  that is not an atom in this VM raises `ArgumentError` (golden external-step-completion s3b).
  `step_configs` values and `runtime_metadata` keep string keys.
  """

  alias Hephaestus.Core.{Context, ExecutionEntry, Instance}

  @spec to_db(Instance.t()) :: {String.t(), String.t(), String.t(), pos_integer(), map()}
  def to_db(%Instance{} = instance) do
    state = %{
      "current_step" => instance.current_step && Atom.to_string(instance.current_step),
      "context" => context_to_db(instance.context),
      "step_configs" =>
        Map.new(instance.step_configs, fn {step, config} ->
          {Atom.to_string(step), stringify_keys(config)}
        end),
      "active_steps" => sorted_strings(instance.active_steps),
      "completed_steps" => sorted_strings(instance.completed_steps),
      "execution_history" => Enum.map(instance.execution_history, &entry_to_db/1),
      "runtime_metadata" => instance.runtime_metadata
    }

    {instance.id, Atom.to_string(instance.workflow), Atom.to_string(instance.status),
     instance.workflow_version, state}
  end

  @spec from_db(String.t(), String.t(), String.t(), pos_integer(), map()) :: Instance.t()
  def from_db(id, workflow, status, workflow_version, state)
      when is_integer(workflow_version) and is_map(state) do
    %Instance{
      id: id,
      workflow: loaded_module(workflow),
      workflow_version: workflow_version,
      status: String.to_existing_atom(status),
      current_step: state["current_step"] && loaded_module(state["current_step"]),
      context: context_from_db(state["context"]),
      step_configs:
        Map.new(state["step_configs"] || %{}, fn {step, config} -> {loaded_module(step), config} end),
      active_steps: MapSet.new(state["active_steps"] || [], &loaded_module/1),
      completed_steps: MapSet.new(state["completed_steps"] || [], &loaded_module/1),
      execution_history: Enum.map(state["execution_history"] || [], &entry_from_db/1),
      runtime_metadata: state["runtime_metadata"] || %{}
    }
  end

  defp loaded_module(text) when is_binary(text) do
    module = String.to_existing_atom(text)
    Code.ensure_loaded!(module)
    module
  end

  defp sorted_strings(set),
    do: set |> MapSet.to_list() |> Enum.map(&Atom.to_string/1) |> Enum.sort()

  defp context_to_db(%Context{initial: initial, steps: steps}) do
    %{
      "initial" => stringify_keys(initial),
      "steps" =>
        Map.new(steps, fn {key, result} -> {Atom.to_string(key), stringify_keys(result)} end)
    }
  end

  defp context_from_db(%{"initial" => initial, "steps" => steps}) do
    %Context{
      initial: atomize_keys(initial),
      steps:
        Map.new(steps, fn {key, result} -> {String.to_existing_atom(key), atomize_keys(result)} end)
    }
  end

  defp context_from_db(_other), do: Context.new(%{})

  defp entry_to_db(%ExecutionEntry{} = entry) do
    %{
      "step_ref" => Atom.to_string(entry.step_ref),
      "event" => Atom.to_string(entry.event),
      "timestamp" => DateTime.to_iso8601(entry.timestamp),
      "context_updates" => stringify_keys(entry.context_updates)
    }
  end

  defp entry_from_db(%{"step_ref" => step, "event" => event, "timestamp" => at} = entry) do
    {:ok, timestamp, 0} = DateTime.from_iso8601(at)

    %ExecutionEntry{
      step_ref: loaded_module(step),
      event: String.to_existing_atom(event),
      timestamp: timestamp,
      context_updates: atomize_keys(entry["context_updates"])
    }
  end

  defp stringify_keys(map) when is_map(map) do
    Map.new(map, fn
      {key, value} when is_atom(key) -> {Atom.to_string(key), stringify_keys(value)}
      {key, value} -> {key, stringify_keys(value)}
    end)
  end

  defp stringify_keys(list) when is_list(list), do: Enum.map(list, &stringify_keys/1)
  defp stringify_keys(other), do: other

  defp atomize_keys(map) when is_map(map) do
    Map.new(map, fn
      {key, value} when is_binary(key) -> {String.to_existing_atom(key), atomize_keys(value)}
      {key, value} -> {key, atomize_keys(value)}
    end)
  end

  defp atomize_keys(list) when is_list(list), do: Enum.map(list, &atomize_keys/1)
  defp atomize_keys(other), do: other
end
