defmodule Hephaestus.Steps.Done do
  @moduledoc "hephaestus_core's terminal step (lib/hephaestus/steps/done.ex): always `{:ok, :done}`."
  @behaviour Hephaestus.Steps.Step

  @impl true
  def events, do: [:done]

  @impl true
  def execute(%Hephaestus.Core.Instance{}, _config, %Hephaestus.Core.Context{}), do: {:ok, :done}
end

defmodule Hephaestus.Steps.Wait do
  @moduledoc """
  hephaestus_core's timer step (lib/hephaestus/steps/wait.ex): `{:async}`, event `:timeout`;
  `delay_ms/1` turns `%{duration:, unit:}` into milliseconds. As upstream, nothing in
  HephaestusOban schedules the resume by itself: the caller uses `Runner.schedule_resume/3`.
  """
  @behaviour Hephaestus.Steps.Step

  @impl true
  def events, do: [:timeout]

  @impl true
  def execute(%Hephaestus.Core.Instance{}, _config, %Hephaestus.Core.Context{}), do: {:async}

  @spec delay_ms(map()) :: integer()
  def delay_ms(%{duration: duration, unit: :second}), do: duration * 1_000
  def delay_ms(%{duration: duration, unit: :minute}), do: duration * 60_000
  def delay_ms(%{duration: duration, unit: :hour}), do: duration * 3_600_000
  def delay_ms(%{duration: duration, unit: :day}), do: duration * 86_400_000
end

defmodule Hephaestus.Steps.WaitForEvent do
  @moduledoc "hephaestus_core's external-event step (lib/hephaestus/steps/wait_for_event.ex)."
  @behaviour Hephaestus.Steps.Step

  @impl true
  def events, do: [:received]

  @impl true
  def execute(%Hephaestus.Core.Instance{}, _config, %Hephaestus.Core.Context{}), do: {:async}
end
