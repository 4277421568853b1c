# Workflows and steps of interop_tests/test_workflows_delegation.py: Elixir workflows with steps
# run by Python workers (ObanBridge.DelegatedStep, from integrations/elixir), and Elixir steps
# that Python workflows run through ObanBridge.StepWorker. Written as an app would write them.

defmodule Delegation.Steps.Start do
  @moduledoc "Event `done`, context `started: true`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, _context), do: {:ok, :done, %{started: true}}
end

defmodule Delegation.Steps.Render do
  @moduledoc "Run by the Python worker `interop.delegation.Render`."
  use ObanBridge.DelegatedStep,
    worker: "interop.delegation.Render",
    queue: "python",
    events: [:rendered, :render_failed],
    context_keys: [:pdf_url, :pages],
    failure_event: :render_failed,
    context: [initial: [:url, :mode], steps: [:start]],
    max_attempts: 1
end

defmodule Delegation.Steps.Local do
  @moduledoc "Sleeps `sleep_ms` (initial context), then event `done`, context `local: \"ok\"`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, context) do
    case Map.get(context.initial, :sleep_ms) do
      ms when is_integer(ms) and ms > 0 -> Process.sleep(ms)
      _ -> :ok
    end

    {:ok, :done, %{local: "ok"}}
  end
end

defmodule Delegation.Steps.Join do
  @moduledoc "Event `done`, context `joined: true`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, _context), do: {:ok, :done, %{joined: true}}
end

defmodule Delegation.Flows.Fanout do
  @moduledoc "Start → [Render (Python), Local] → Join → Done."
  use Hephaestus.Workflow, unique: [key: "delegfanout"]
  alias Delegation.Steps.{Join, Local, Render, Start}
  @impl true
  def start, do: Start
  @impl true
  def transit(Start, :done, _ctx), do: [Render, Local]
  def transit(Render, :rendered, _ctx), do: Join
  def transit(Render, :render_failed, _ctx), do: Join
  def transit(Local, :done, _ctx), do: Join
  def transit(Join, :done, _ctx), do: Hephaestus.Steps.Done
end

defmodule Delegation.Steps.Check do
  @moduledoc "Run by the Python worker `interop.delegation.Check`; no failure event."
  use ObanBridge.DelegatedStep,
    worker: "interop.delegation.Check",
    queue: "python",
    events: [:checked],
    context_keys: [:verdict],
    max_attempts: 1
end

defmodule Delegation.Flows.Strict do
  @moduledoc "Start → Check (Python) → Done."
  use Hephaestus.Workflow, unique: [key: "delegstrict"]
  alias Delegation.Steps.{Check, Start}
  @impl true
  def start, do: Start
  @impl true
  def transit(Start, :done, _ctx), do: Check
  def transit(Check, :checked, _ctx), do: Hephaestus.Steps.Done
end

defmodule Delegation.Steps.Await do
  @moduledoc "A plain async step (event `arrived`), completed from Python through the door."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:arrived]
  @impl true
  def execute(_instance, _config, _context), do: {:async}
end

defmodule Delegation.Flows.Await do
  @moduledoc "Start → Await → Done."
  use Hephaestus.Workflow, unique: [key: "delegawait"]
  alias Delegation.Steps.{Await, Start}
  @impl true
  def start, do: Start
  @impl true
  def transit(Start, :done, _ctx), do: Await
  def transit(Await, :arrived, _ctx), do: Hephaestus.Steps.Done
end

defmodule Delegation.Steps.Charge do
  @moduledoc """
  An Elixir step that Python workflows run (allow-listed for ObanBridge.StepWorker). Reads
  `context.steps.prepare.amount`; `context.initial.mode` picks `"fail"` ({:error, ...}),
  `"undeclared"` (a key the Python step does not declare) or success.
  """
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:charged, :declined]
  @impl true
  def execute(instance, _config, context) do
    case Map.get(context.initial, :mode) do
      "fail" ->
        {:error, :card_declined}

      "undeclared" ->
        {:ok, :charged, %{zz_not_declared: true}}

      _ ->
        amount = get_in(context.steps, [:prepare, :amount])
        {:ok, :charged, %{amount: amount, receipt: "r-" <> instance.id}, %{charged_by: "elixir"}}
    end
  end
end

defmodule Delegation.Steps.NotListed do
  @moduledoc "A step module that is NOT in the StepWorker allow-list."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:charged]
  @impl true
  def execute(_instance, _config, _context), do: {:ok, :charged, %{}}
end

defmodule Delegation.Steps.Slow do
  @moduledoc "Run by `interop.delegation.Slow` on queue `python_kill`; 3 attempts."
  use ObanBridge.DelegatedStep,
    worker: "interop.delegation.Slow",
    queue: "python_kill",
    events: [:finished],
    context_keys: [:attempt],
    max_attempts: 3
end

defmodule Delegation.Steps.SlowLast do
  @moduledoc "Like Slow with a single attempt and no failure event."
  use ObanBridge.DelegatedStep,
    worker: "interop.delegation.Slow",
    queue: "python_kill",
    events: [:finished],
    context_keys: [:attempt],
    max_attempts: 1
end

defmodule Delegation.Flows.Slow do
  @moduledoc "Start → Slow (Python) → Done."
  use Hephaestus.Workflow, unique: [key: "delegslow"]
  @impl true
  def start, do: Delegation.Steps.Start
  @impl true
  def transit(Delegation.Steps.Start, :done, _ctx), do: Delegation.Steps.Slow
  def transit(Delegation.Steps.Slow, :finished, _ctx), do: Hephaestus.Steps.Done
end

defmodule Delegation.Flows.SlowLast do
  @moduledoc "Start → SlowLast (Python) → Done."
  use Hephaestus.Workflow, unique: [key: "delegslowlast"]
  @impl true
  def start, do: Delegation.Steps.Start
  @impl true
  def transit(Delegation.Steps.Start, :done, _ctx), do: Delegation.Steps.SlowLast
  def transit(Delegation.Steps.SlowLast, :finished, _ctx), do: Hephaestus.Steps.Done
end
