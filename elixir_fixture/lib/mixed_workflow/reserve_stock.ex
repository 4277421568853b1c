defmodule MixedWorkflow.Steps.ReserveStock do
  @moduledoc """
  The Elixir half of `examples/mixed_workflow`: a Hephaestus step that the Python workflow
  `Elixir.MixedWorkflow.Flows.Order` runs in Elixir (`elixir_step(...)` on the Python side,
  `ObanBridge.StepWorker` here, allow-listed by `FIXTURE_BRIDGE_STEPS` in the app mode as a
  user's `config :oban_bridge, steps: [...]` would).

  An ordinary step, written as for an Elixir workflow: it reads the order's `sku` and
  `quantity` from the initial context, reserves them from a fixed stock (`tea`: 5, `mug`: 0) and
  returns `:reserved` with a reservation id, or `:out_of_stock`. It logs one line on stderr
  (`[warehouse] …`) so a test sees that the BEAM ran it.
  """

  @behaviour Hephaestus.Steps.Step

  @stock %{"tea" => 5, "mug" => 0}

  @impl true
  def events, do: [:reserved, :out_of_stock]

  @impl true
  def execute(instance, _config, context) do
    sku = context.initial.sku
    quantity = context.initial.quantity

    if Map.get(@stock, sku, 0) >= quantity do
      IO.write(:standard_error, "[warehouse] reserved #{quantity} x #{sku} for #{instance.id}\n")
      {:ok, :reserved, %{reservation: "R-" <> instance.id, warehouse: "elixir"}}
    else
      IO.write(:standard_error, "[warehouse] #{sku} out of stock for #{instance.id}\n")
      {:ok, :out_of_stock, %{}}
    end
  end
end
