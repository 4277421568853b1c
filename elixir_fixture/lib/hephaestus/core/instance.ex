defmodule Hephaestus.Core.Context do
  @moduledoc """
  hephaestus_core's context (lib/hephaestus/core/context.ex): `initial` (the start data) and
  `steps` (each completed step's updates under its context key).
  """
  @enforce_keys [:initial]
  defstruct initial: %{}, steps: %{}

  @type t :: %__MODULE__{initial: map(), steps: map()}

  @spec new(map()) :: t()
  def new(initial), do: %__MODULE__{initial: initial, steps: %{}}

  @spec put_step_result(t(), atom(), map()) :: t()
  def put_step_result(%__MODULE__{} = context, key, result),
    do: %{context | steps: Map.put(context.steps, key, result)}
end

defmodule Hephaestus.Core.ExecutionEntry do
  @moduledoc "hephaestus_core's history entry (HephaestusOban never appends one)."
  @enforce_keys [:step_ref, :event, :timestamp]
  defstruct [:step_ref, :event, :timestamp, :context_updates]

  @type t :: %__MODULE__{}
end

defmodule Hephaestus.Core.Instance do
  @moduledoc """
  hephaestus_core's instance struct (lib/hephaestus/core/instance.ex): same fields and defaults;
  `new/4` takes workflow, version, initial context and the explicit id.
  """
  alias Hephaestus.Core.Context

  @enforce_keys [:id, :workflow]
  defstruct [
    :id,
    :workflow,
    :current_step,
    workflow_version: 1,
    status: :pending,
    context: %Context{initial: %{}, steps: %{}},
    step_configs: %{},
    active_steps: MapSet.new(),
    completed_steps: MapSet.new(),
    runtime_metadata: %{},
    execution_history: [],
    telemetry_metadata: %{},
    telemetry_start_time: nil
  ]

  @type status :: :pending | :running | :waiting | :completed | :failed
  @type t :: %__MODULE__{}

  @spec new(module(), pos_integer(), map(), String.t()) :: t()
  def new(workflow, version, context, id)
      when is_atom(workflow) and is_integer(version) and version > 0 and is_map(context) and
             is_binary(id) do
    %__MODULE__{
      id: id,
      workflow: workflow,
      workflow_version: version,
      context: Context.new(context)
    }
  end
end
