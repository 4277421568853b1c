defmodule FixtureFlows.Timed do
  @moduledoc """
  Not from a capture: exercises what the golden workflows do not — a step config
  (`{Hephaestus.Steps.Wait, %{duration: 1, unit: :second}}`), workflow `tags` and `metadata`,
  `version: 2` (job meta takes `__version__/0`, args the instance's version), and a timer
  resumed with `HephaestusOban.Runner.schedule_resume/3`. Pass → Wait → Done.
  Python mirror: `interop_tests/workflow_support.py` (TIMED).
  """
  use Hephaestus.Workflow,
    unique: [key: "timed"],
    version: 2,
    tags: ["fixture"],
    metadata: %{"team" => "interop"}

  @impl true
  def start, do: Realstack.Steps.Pass

  @impl true
  def transit(Realstack.Steps.Pass, :done, _ctx),
    do: {Hephaestus.Steps.Wait, %{duration: 1, unit: :second}}

  def transit(Hephaestus.Steps.Wait, :timeout, _ctx), do: Hephaestus.Steps.Done
end
