defmodule Reports.Steps.Gather do
  @moduledoc """
  The first step of `examples/elixir_workflow`'s report, an ordinary Elixir step: the month's
  figures (a fixed table here; the app's own queries in a real one).
  """

  @behaviour Hephaestus.Steps.Step

  @figures %{"202611" => [3, 5, 8, 13], "202612" => []}

  @impl true
  def events, do: [:gathered]

  @impl true
  def execute(_instance, _config, context) do
    {:ok, :gathered, %{figures: Map.get(@figures, context.initial.month, [])}}
  end
end

defmodule Reports.Steps.RenderChart do
  @moduledoc """
  The step of `examples/elixir_workflow` whose body runs in Python: `execute/3` (generated)
  enqueues one job for the Python worker `reports.charts.render_chart` in queue `charts` and
  returns `{:async}`; the Python body completes the step with `:rendered` and a `chart` (and its
  `points`), the only keys it may write. When it fails for good, the step completes with
  `:render_failed` and the workflow goes on without a chart. One attempt keeps the example
  quick; give a real step a few (Oban's backoff runs between them).
  """

  use ObanBridge.DelegatedStep,
    worker: "reports.charts.render_chart",
    queue: "charts",
    events: [:rendered, :render_failed],
    context_keys: [:chart, :points],
    failure_event: :render_failed,
    context: [initial: [:month], steps: [:gather]],
    max_attempts: 1
end

defmodule Reports.Steps.Publish do
  @moduledoc "Publishes the report with its chart; logs `[reports] …` on stderr."

  @behaviour Hephaestus.Steps.Step

  @impl true
  def events, do: [:published]

  @impl true
  def execute(instance, _config, context) do
    points = context.steps.render_chart.points
    IO.write(:standard_error, "[reports] #{instance.id} published with a #{points}-bar chart\n")
    {:ok, :published, %{with_chart: true}}
  end
end

defmodule Reports.Steps.PublishWithoutChart do
  @moduledoc "Publishes the report without a chart (the chart step failed for good)."

  @behaviour Hephaestus.Steps.Step

  @impl true
  def events, do: [:published]

  @impl true
  def execute(instance, _config, _context) do
    IO.write(:standard_error, "[reports] #{instance.id} published without a chart\n")
    {:ok, :published, %{with_chart: false}}
  end
end
