defmodule Reports.Flows.Monthly do
  @moduledoc """
  The Elixir-owned workflow of `examples/elixir_workflow`, run by HephaestusOban in the Elixir
  app: Gather → RenderChart (its body in Python) → Publish, or PublishWithoutChart when the
  chart failed for good → Done. Instance ids are `report::<month>`.
  """

  use Hephaestus.Workflow, unique: [key: "report"]

  alias Reports.Steps.{Gather, Publish, PublishWithoutChart, RenderChart}

  @impl true
  def start, do: Gather

  @impl true
  def transit(Gather, :gathered, _ctx), do: RenderChart
  def transit(RenderChart, :rendered, _ctx), do: Publish
  def transit(RenderChart, :render_failed, _ctx), do: PublishWithoutChart
  def transit(Publish, :published, _ctx), do: Hephaestus.Steps.Done
  def transit(PublishWithoutChart, :published, _ctx), do: Hephaestus.Steps.Done
end

defmodule Reports.StartReport do
  @moduledoc """
  Starts a month's report: an Oban worker of the Elixir app (anything may enqueue it, Python
  included, with args `{"month": "202611"}`). It calls HephaestusOban's runner,
  `HephaestusOban.Runner.start_instance/3` (an app with a `use Hephaestus` entry module goes
  through that module instead), with the storage and config key the app registered.
  """

  use Oban.Worker, queue: :reports, max_attempts: 3

  @impl Oban.Worker
  def perform(%Oban.Job{args: %{"month" => month}}) do
    opts = [
      storage: {HephaestusEcto.Storage, HephaestusEcto.Storage},
      config_key: Application.fetch_env!(:oban_bridge, :config_key),
      oban: Oban,
      id: "report::" <> month
    ]

    case HephaestusOban.Runner.start_instance(Reports.Flows.Monthly, %{month: month}, opts) do
      {:ok, _id} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end
end
