# The second golden capture's workflows (failing-step/, async-step-in-fanout/,
# external-step-completion/), same module names. Python mirrors: tests/workflows/__init__.py.
# Where the genuine steps slept to stage a race, these sleep `sleep_ms` from the initial context
# (default 0) so tests choose the timing.

defmodule Realstack.Steps.Sleep do
  @moduledoc false
  @spec pause(Hephaestus.Core.Context.t()) :: :ok
  def pause(context) do
    case Map.get(context.initial, :sleep_ms) do
      ms when is_integer(ms) and ms > 0 -> Process.sleep(ms)
      _ -> :ok
    end
  end
end

defmodule Realstack.Steps.Pass do
  @moduledoc "Event `done`, context `pass: true`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, _context), do: {:ok, :done, %{pass: true}}
end

defmodule Realstack.Steps.Normal do
  @moduledoc "Event `done`, context `n: 1, normal: \"ok\"`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, _context), do: {:ok, :done, %{n: 1, normal: "ok"}}
end

defmodule Realstack.Steps.NormalSlow do
  @moduledoc "Sleeps `sleep_ms`, then event `done`, context `normal_slow: \"ok\"`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, context) do
    Realstack.Steps.Sleep.pause(context)
    {:ok, :done, %{normal_slow: "ok"}}
  end
end

defmodule Realstack.Steps.Slow do
  @moduledoc "Sleeps `sleep_ms`, then event `done`, context `slow: true`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, context) do
    Realstack.Steps.Sleep.pause(context)
    {:ok, :done, %{slow: true}}
  end
end

defmodule Realstack.Steps.AsyncWait do
  @moduledoc "Async, resumed with event `resumed`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:resumed]
  @impl true
  def execute(_instance, _config, _context), do: {:async}
end

defmodule Realstack.Steps.AsyncWaitSlow do
  @moduledoc "Sleeps `sleep_ms`, then async (event `resumed`)."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:resumed]
  @impl true
  def execute(_instance, _config, context) do
    Realstack.Steps.Sleep.pause(context)
    {:async}
  end
end

defmodule Realstack.Steps.Boom do
  @moduledoc "`{:error, :boom}`, one attempt (retry config `max_attempts: 1`)."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def retry_config, do: %{max_attempts: 1, backoff: :exponential, max_backoff: 1_000}
  @impl true
  def execute(_instance, _config, _context), do: {:error, :boom}
end

defmodule Realstack.Steps.Join do
  @moduledoc "Event `done`, context `joined: true` and the sorted keys of `context.steps`."
  @behaviour Hephaestus.Steps.Step
  @impl true
  def events, do: [:done]
  @impl true
  def execute(_instance, _config, context),
    do: {:ok, :done, %{joined: true, seen_steps: context.steps |> Map.keys() |> Enum.sort()}}
end

defmodule Realstack.WF.AsyncFanout do
  @moduledoc "Pass → [AsyncWait, Normal] → Join → Done."
  use Hephaestus.Workflow, unique: [key: "asyncfanout"]
  alias Realstack.Steps.{AsyncWait, Join, Normal, Pass}
  @impl true
  def start, do: Pass
  @impl true
  def transit(Pass, :done, _ctx), do: [AsyncWait, Normal]
  def transit(AsyncWait, :resumed, _ctx), do: Join
  def transit(Normal, :done, _ctx), do: Join
  def transit(Join, :done, _ctx), do: Hephaestus.Steps.Done
end

defmodule Realstack.WF.AsyncFirst do
  @moduledoc "Pass → [AsyncWait, NormalSlow] → Join → Done."
  use Hephaestus.Workflow, unique: [key: "asyncfirst"]
  alias Realstack.Steps.{AsyncWait, Join, NormalSlow, Pass}
  @impl true
  def start, do: Pass
  @impl true
  def transit(Pass, :done, _ctx), do: [AsyncWait, NormalSlow]
  def transit(AsyncWait, :resumed, _ctx), do: Join
  def transit(NormalSlow, :done, _ctx), do: Join
  def transit(Join, :done, _ctx), do: Hephaestus.Steps.Done
end

defmodule Realstack.WF.NormalFirst do
  @moduledoc "Pass → [AsyncWaitSlow, Normal] → Join → Done."
  use Hephaestus.Workflow, unique: [key: "normalfirst"]
  alias Realstack.Steps.{AsyncWaitSlow, Join, Normal, Pass}
  @impl true
  def start, do: Pass
  @impl true
  def transit(Pass, :done, _ctx), do: [AsyncWaitSlow, Normal]
  def transit(AsyncWaitSlow, :resumed, _ctx), do: Join
  def transit(Normal, :done, _ctx), do: Join
  def transit(Join, :done, _ctx), do: Hephaestus.Steps.Done
end

defmodule Realstack.WF.FailFanout do
  @moduledoc "Pass → [Boom, Slow] → Join → Done."
  use Hephaestus.Workflow, unique: [key: "failfanout"]
  alias Realstack.Steps.{Boom, Join, Pass, Slow}
  @impl true
  def start, do: Pass
  @impl true
  def transit(Pass, :done, _ctx), do: [Boom, Slow]
  def transit(Boom, :done, _ctx), do: Join
  def transit(Slow, :done, _ctx), do: Join
  def transit(Join, :done, _ctx), do: Hephaestus.Steps.Done
end

defmodule Realstack.WF.FailLinear do
  @moduledoc "Boom → Done."
  use Hephaestus.Workflow, unique: [key: "faillinear"]
  @impl true
  def start, do: Realstack.Steps.Boom
  @impl true
  def transit(Realstack.Steps.Boom, :done, _ctx), do: Hephaestus.Steps.Done
end

defmodule Realstack.Atoms do
  @moduledoc """
  The context keys that existed as atoms in the genuine VM when external-step-completion s3a
  ran (`tests/workflows/__init__.py`'s EXTERNAL_ATOMS): an outside completion may use them.
  """
  @spec known() :: [atom()]
  def known,
    do: [
      :seen_steps,
      :source,
      :nested_info,
      :items,
      :amount_cents,
      :external_ref,
      :order_id,
      :input
    ]
end
