# The golden capture's first workflow (golden/README.md, scenario 1), under its own module names,
# so rows written here and by the genuine stack name the same modules. tests/workflows/__init__.py
# (ORDER) and interop_tests/workflow_support.py mirror it in Python.

defmodule RealStack.Steps.Validate do
  @moduledoc "Event `valid`; context `items` (from the initial context) and `checked`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:valid]
  @impl true
  def execute(_instance, _config, context),
    do: {:ok, :valid, %{items: context.initial.items, checked: true}}
end

defmodule RealStack.Steps.Charge do
  @moduledoc "Event `charged`; context `amount: 42.5`; runtime metadata `payment_ref`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:charged]
  @impl true
  def execute(_instance, _config, _context),
    do: {:ok, :charged, %{amount: 42.5}, %{"payment_ref" => "pay_1"}}
end

defmodule RealStack.Steps.Reserve do
  @moduledoc "Event `reserved`; context `sku`, `qty`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:reserved]
  @impl true
  def execute(_instance, _config, _context), do: {:ok, :reserved, %{sku: "A-1", qty: 2}}
end

defmodule RealStack.Steps.AwaitShipment do
  @moduledoc "Async: the instance waits until `resume(id, :shipped)` (or an outside completion)."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:shipped]
  @impl true
  def execute(_instance, _config, _context), do: {:async}
end

defmodule RealStack.Steps.Notify do
  @moduledoc "Event `notified`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:notified]
  @impl true
  def execute(_instance, _config, _context), do: {:ok, :notified}
end

defmodule RealStack.Flows.Order do
  @moduledoc "Validate → [Charge, Reserve] → AwaitShipment (join, async) → Notify → Done."
  use Hephaestus.Workflow, unique: [key: "order"]

  alias RealStack.Steps.{AwaitShipment, Charge, Notify, Reserve, Validate}

  @impl true
  def start, do: Validate

  @impl true
  def transit(Validate, :valid, _ctx), do: [Charge, Reserve]
  def transit(Charge, :charged, _ctx), do: AwaitShipment
  def transit(Reserve, :reserved, _ctx), do: AwaitShipment
  def transit(AwaitShipment, :shipped, _ctx), do: Notify
  def transit(Notify, :notified, _ctx), do: Hephaestus.Steps.Done
end

defmodule RealStack.Atoms do
  @moduledoc """
  The initial-context keys the golden capture's caller wrote as atoms (`%{items: 3, customer:
  "c-9"}`): in the genuine VM they existed because the calling code named them.
  """
  @spec known() :: [atom()]
  def known, do: [:items, :customer]
end
