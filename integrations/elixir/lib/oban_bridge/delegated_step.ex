defmodule ObanBridge.DelegatedStep do
  @moduledoc """
  Turns a Hephaestus step into one whose body runs in Python (oban-bridge).

      defmodule MyApp.Steps.Render do
        use ObanBridge.DelegatedStep,
          worker: "myapp.steps.Render",   # the Python worker's registered name
          queue: "python",                # a queue only Python nodes serve
          events: [:rendered, :render_failed],
          context_keys: [:pdf_url, :pages],
          failure_event: :render_failed,  # optional: what a permanent failure completes with
          context: :all                   # or [initial: [:url], steps: [:validate]] or :none
      end

  `execute/3` enqueues one job for the Python worker and returns `{:async}`. The job is unique
  per (instance, step) while it is unfinished, so when HephaestusOban executes the async step
  again (it does when a sibling's result arrives later) no second Python run is queued. Its meta
  and tags are the ones `HephaestusOban.JobMetadata.build/3` gives the step, which the Python
  side copies onto the AdvanceWorker it inserts when it completes the step.

  The Python side may complete the step only with a declared event and only with context-update
  keys from `context_keys` (at any depth): those are literals here, so they are atoms in this VM
  and the instance stays loadable. Without `failure_event`, a Python step that fails for good
  fails the instance the way HephaestusOban's failure path does.

  Options: `worker` and `events` (required), `queue` ("python"), `context_keys` ([]),
  `failure_event`, `context` (:all), `max_attempts` (5, the Python job's), `priority` (0),
  `step_key`, `config_key`, `oban` (both default to `config :oban_bridge`).
  """

  @unique_states [:available, :scheduled, :executing, :retryable]

  defmacro __using__(opts) do
    quote bind_quoted: [opts: opts] do
      @behaviour Hephaestus.Steps.Step

      @oban_bridge_opts ObanBridge.DelegatedStep.validate!(__MODULE__, opts)
      @oban_bridge_events Keyword.fetch!(opts, :events)

      @impl Hephaestus.Steps.Step
      def events, do: @oban_bridge_events

      if Keyword.has_key?(opts, :step_key) do
        @oban_bridge_step_key Keyword.fetch!(opts, :step_key)
        @impl Hephaestus.Steps.Step
        def step_key, do: @oban_bridge_step_key
      end

      @doc false
      def __delegation__, do: @oban_bridge_opts

      @impl Hephaestus.Steps.Step
      def execute(instance, config, context),
        do: ObanBridge.DelegatedStep.execute(__MODULE__, instance, config, context)
    end
  end

  @doc false
  @spec validate!(module(), keyword()) :: map()
  def validate!(module, opts) do
    worker = Keyword.fetch!(opts, :worker)
    events = Keyword.fetch!(opts, :events)
    keys = Keyword.get(opts, :context_keys, [])
    failure = Keyword.get(opts, :failure_event)

    unless is_binary(worker) and worker != "",
      do: raise(ArgumentError, "#{inspect(module)}: :worker must be the Python worker's name")

    unless events != [] and Enum.all?(events, &is_atom/1),
      do: raise(ArgumentError, "#{inspect(module)}: :events must be a non-empty list of atoms")

    unless Enum.all?(keys, &is_atom/1),
      do: raise(ArgumentError, "#{inspect(module)}: :context_keys must be atoms")

    unless is_nil(failure) or failure in events,
      do: raise(ArgumentError, "#{inspect(module)}: :failure_event must be one of :events")

    %{
      worker: worker,
      queue: to_string(Keyword.get(opts, :queue, "python")),
      events: Enum.map(events, &Atom.to_string/1),
      # Kept as atoms: stored in this attribute they are literals of the compiled module, so
      # they exist as atoms wherever the module is loaded (strings here would not make them).
      context_keys: keys |> Enum.uniq() |> Enum.sort(),
      failure_event: failure && Atom.to_string(failure),
      context: Keyword.get(opts, :context, :all),
      max_attempts: Keyword.get(opts, :max_attempts, 5),
      priority: Keyword.get(opts, :priority, 0),
      config_key: Keyword.get(opts, :config_key),
      oban: Keyword.get(opts, :oban)
    }
  end

  @doc false
  @spec execute(module(), Hephaestus.Core.Instance.t(), map() | nil, Hephaestus.Core.Context.t()) ::
          {:async} | {:error, term()}
  def execute(module, instance, config, context) do
    opts = module.__delegation__()
    oban = opts.oban || ObanBridge.Protocol.setting(:oban, Oban)
    config_key = to_string(opts.config_key || ObanBridge.Protocol.setting(:config_key))

    [meta: meta, tags: tags] =
      HephaestusOban.JobMetadata.build(instance.workflow, instance.id, step_ref: module)

    args = %{
      "protocol" => ObanBridge.Protocol.version(),
      "instance_id" => instance.id,
      "step_ref" => to_string(module),
      "workflow" => to_string(instance.workflow),
      "workflow_version" => instance.workflow_version,
      "config_key" => config_key,
      "advance_queue" => "hephaestus",
      "context_key" => ObanBridge.Protocol.context_key(module),
      "events" => opts.events,
      "context_keys" => Enum.map(opts.context_keys, &Atom.to_string/1),
      "failure_event" => opts.failure_event,
      "context" => ObanBridge.Protocol.stringify(select(context, opts.context)),
      "config" => config && ObanBridge.Protocol.stringify(config)
    }

    job =
      Oban.Job.new(args,
        worker: opts.worker,
        queue: opts.queue,
        max_attempts: opts.max_attempts,
        priority: opts.priority,
        meta: meta,
        tags: tags,
        unique: [keys: [:instance_id, :step_ref], period: :infinity, states: @unique_states]
      )

    case Oban.insert(oban, job) do
      {:ok, _job} -> {:async}
      {:error, reason} -> {:error, reason}
    end
  end

  defp select(context, :all), do: %{initial: context.initial, steps: context.steps}
  defp select(_context, :none), do: %{initial: %{}, steps: %{}}

  defp select(context, spec) when is_list(spec) do
    %{
      initial: Map.take(context.initial, Keyword.get(spec, :initial, [])),
      steps: Map.take(context.steps, Keyword.get(spec, :steps, []))
    }
  end
end
