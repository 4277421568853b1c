defmodule ObanBridge.PythonWorkflow do
  @moduledoc """
  Python-owned workflows as an Elixir app sees them: their declaration, and resuming them.

  ## Declaring a Python workflow (required for every one that shares your database)

  HephaestusEcto loads a `workflow_instances` row with `String.to_existing_atom/1` on the
  workflow and step modules, the status, history events and every key under `context`, at any
  depth (`HephaestusEcto.Serializer.from_db/5`, each module also `Code.ensure_loaded!/1`). A
  Python-owned row names modules your app does not have and context keys your code never
  writes (Hephaestus creates a step's context key only when its own engine completes the step,
  which never happens for a Python-owned workflow). Without a declaration, *any* call that loads
  such a row — `HephaestusEcto.Storage.get/query`, your facade's `get/1` and `list/1` — raises
  `ArgumentError` (not an already existing atom), on every boot, until the row is deleted.

  The declaration defines the module of the workflow's name and pins every name its rows can
  carry as compile-time literals; generate it, do not write it by hand:

      bridge workflows export-elixir myapp.flows > lib/my_app/python_workflows.ex

      defmodule Order.Flow do
        use ObanBridge.PythonWorkflow,
          name: "Elixir.Order.Flow",
          python_steps: [
            {Order.Steps.Reserve, key: :reserve, events: [:reserved]}
          ],
          elixir_steps: [
            {MyApp.Steps.Charge, key: :charge, events: [:charged, :declined]},
            {Hephaestus.Steps.Done, key: :done, events: [:done]}
          ],
          context_keys: [:amount, :receipt]
      end

  - `name`: the workflow's module string; it must be the declaring module's own name.
  - `python_steps`: steps whose bodies run in Python. A module is defined for each (`events/0`,
    `step_key/0`, nothing to execute): the rows name it and Hephaestus loads it.
  - `elixir_steps`: steps whose modules your app already has (`ObanBridge.StepWorker` steps,
    Hephaestus's built-ins); only their context key and events are pinned.
  - `context_keys`: every other map key the rows can hold, at any depth — initial context and
    step results (Python's `Workflow(atoms=...)` and each `elixir_step(context_keys=...)`).
  - `unique` (`[key: "order"]`), `version`, `tags`, `metadata`: the Python workflow's own (its
    facade builds ids with the key; HephaestusOban's `JobMetadata` reads the others).
  - `queue`, `config_key`: the Python runner's, when not the app-wide setting.

  The atoms exist once the module is loaded: a release loads every module at boot; in
  interactive mode (`mix run`, `iex -S mix`) call `load!/1` in your `Application.start/2`
  before anything lists instances: `ObanBridge.PythonWorkflow.load!(:my_app)`.

  ## Resuming a waiting step of a Python-owned workflow

  The Python runner (oban-bridge's `WorkflowRunner`) runs HephaestusOban's three workers, under
  their names, on a queue of its own (`queue:`/`config_key:` of the declaration, else
  `config :oban_bridge, python_queue: ..., python_config_key: ...`, else "bridge_workflows" and
  "bridge"). Every way an Elixir caller resumes ends there:

  - `Order.Flow.resume(value, event)` — the declaration's facade (as `use Hephaestus.Workflow`'s:
    the id is `"<unique key>::<value>"`) — inserts the Python runner's ResumeWorker. `:ok`.
  - `MyApp.Hephaestus.resume(id, event)` (HephaestusOban.Runner.resume/2) queues a ResumeWorker
    with *your* runner's config key on `hephaestus`. Your node runs it (it records the resume,
    the same row the Python runner records) and its AdvanceWorker calls `transit/3`, which the
    declaration refuses (`ForeignRunnerError`, nothing written) and hands the job back: cancelled,
    and the Python runner's AdvanceWorker queued, which applies the resume and runs the Python
    bodies. Any other job your runner takes for the workflow (`start/0`, a Python step's
    `retry_config/0` or `execute/3`) is refused and handed back the same way (`hand_back/2`).
  - `ObanBridge.PythonWorkflow.resume("order::o-1", :shipped)` inserts the ResumeWorker directly:
    args `instance_id`, `step_ref`, `event`, `config_key`, `workflow`, `workflow_version`,
    `max_attempts` 3, meta and tags as `HephaestusOban.JobMetadata.build/3` gives them for the
    step. Options: `step_ref` (default: the instance's `current_step`), `queue`, `config_key`,
    `oban`, `tags`, `metadata` (default: the declaration's). Returns `{:ok, %Oban.Job{}}`,
    `{:error, :instance_not_found}` or `{:error, :not_waiting}`.
  """

  @typedoc "What `use ObanBridge.PythonWorkflow` pinned, as `__python_workflow__/0` returns it."
  @type declaration :: %{
          name: module(),
          python_steps: [module()],
          elixir_steps: [module()],
          step_keys: %{module() => atom()},
          events: [atom()],
          context_keys: [atom()],
          unique_key: String.t() | nil,
          version: pos_integer(),
          tags: [String.t()],
          metadata: map(),
          queue: String.t() | nil,
          config_key: String.t() | nil
        }

  @options [
    :name,
    :python_steps,
    :elixir_steps,
    :context_keys,
    :unique,
    :version,
    :tags,
    :metadata,
    :queue,
    :config_key
  ]

  defmacro __using__(opts) do
    quote bind_quoted: [opts: opts] do
      declaration = ObanBridge.PythonWorkflow.__declaration__(__MODULE__, opts)
      workflow = __MODULE__

      for {step, key, events} <- ObanBridge.PythonWorkflow.__python_steps__(opts) do
        defmodule step do
          @moduledoc false
          # A Python step, declared so that rows naming it load here; it runs only in Python.
          def events, do: unquote(events)
          def step_key, do: unquote(key)
          def __python_step_of__, do: unquote(workflow)

          # HephaestusOban calls these only when its own runner took a job of this workflow
          # (AdvanceWorker queueing the step, ExecuteStepWorker running it): refused, and the
          # work handed back to the Python runner (ObanBridge.PythonWorkflow.refuse!/2).
          @doc false
          def retry_config, do: ObanBridge.PythonWorkflow.refuse!(unquote(workflow), __MODULE__)

          @doc false
          def execute(_instance, _config, _context),
            do: ObanBridge.PythonWorkflow.refuse!(unquote(workflow), __MODULE__)
        end
      end

      @doc false
      @spec __python_workflow__() :: ObanBridge.PythonWorkflow.declaration()
      def __python_workflow__, do: unquote(Macro.escape(declaration))

      # What HephaestusOban.JobMetadata.build/3 reads (safe_call): the Python workflow's own
      # tags, metadata and version, so the jobs any runner builds for it carry its meta.
      @doc false
      def __tags__, do: unquote(declaration.tags)
      @doc false
      def __metadata__, do: unquote(Macro.escape(declaration.metadata))
      @doc false
      def __version__, do: unquote(declaration.version)

      # Hephaestus.Core.Engine's callbacks: the graph lives in Python. HephaestusOban's runner
      # calls them only when it took a job of this workflow; refused before it writes anything.
      @doc false
      def start, do: ObanBridge.PythonWorkflow.refuse!(__MODULE__, :start)
      @doc false
      def transit(_from, _event, _context),
        do: ObanBridge.PythonWorkflow.refuse!(__MODULE__, :transit)

      @doc """
      Resume a waiting instance of this Python-owned workflow, as `use Hephaestus.Workflow`'s
      facade `resume/2` does for an Elixir one (the id is `"<unique key>::<value>"`, or `value`
      itself when the workflow declares no business key), but through the Python runner:
      `ObanBridge.PythonWorkflow.resume/3`. Returns `:ok` or `{:error, reason}`.
      """
      @spec resume(String.t(), atom() | String.t()) :: :ok | {:error, term()}
      def resume(value, event),
        do: ObanBridge.PythonWorkflow.resume_declared(__MODULE__, value, event)
    end
  end

  @doc false
  def __declaration__(module, opts) do
    name = Keyword.get(opts, :name, Atom.to_string(module))

    unless name == Atom.to_string(module) do
      raise ArgumentError,
            "use ObanBridge.PythonWorkflow, name: #{inspect(name)} must be declared in the " <>
              "module of that name, not in #{inspect(module)}"
    end

    python = steps!(opts, :python_steps)
    elixir = steps!(opts, :elixir_steps)
    context_keys = atoms!(Keyword.get(opts, :context_keys, []), :context_keys)
    unknown = Keyword.keys(opts) -- @options
    if unknown != [], do: raise(ArgumentError, "unknown options #{inspect(unknown)}")
    version = Keyword.get(opts, :version, 1)
    tags = Keyword.get(opts, :tags, [])
    metadata = Keyword.get(opts, :metadata, %{})

    unless is_integer(version) and version > 0,
      do: raise(ArgumentError, "version: must be a positive integer")

    unless is_list(tags) and Enum.all?(tags, &is_binary/1),
      do: raise(ArgumentError, "tags: a list of strings")

    unless is_map(metadata) and Enum.all?(Map.keys(metadata), &is_binary/1),
      do: raise(ArgumentError, "metadata: a map with string keys")

    unique_key = opts |> Keyword.get(:unique, []) |> Keyword.get(:key)

    for option <- [:queue, :config_key] do
      value = Keyword.get(opts, option)

      unless is_nil(value) or (is_binary(value) and value != ""),
        do: raise(ArgumentError, "#{option}: a non-empty string")
    end

    steps = python ++ elixir

    %{
      name: module,
      python_steps: for({step, _key, _events} <- python, do: step),
      elixir_steps: for({step, _key, _events} <- elixir, do: step),
      step_keys: Map.new(steps, fn {step, key, _events} -> {step, key} end),
      events: steps |> Enum.flat_map(fn {_step, _key, events} -> events end) |> Enum.uniq(),
      context_keys: context_keys,
      unique_key: unique_key,
      version: version,
      tags: tags,
      metadata: metadata,
      queue: Keyword.get(opts, :queue),
      config_key: Keyword.get(opts, :config_key)
    }
  end

  @doc false
  def __python_steps__(opts), do: steps!(opts, :python_steps)

  defp steps!(opts, option) do
    for entry <- Keyword.get(opts, option, []) do
      case entry do
        {step, spec} when is_atom(step) and is_list(spec) ->
          key = Keyword.fetch!(spec, :key)
          unless is_atom(key), do: raise(ArgumentError, "#{option}: key of #{inspect(step)}")
          {step, key, atoms!(Keyword.get(spec, :events, []), option)}

        other ->
          raise ArgumentError,
                "#{option}: expected {StepModule, key: ..., events: [...]}, got #{inspect(other)}"
      end
    end
  end

  defp atoms!(list, option) when is_list(list) do
    if Enum.all?(list, &is_atom/1), do: list, else: raise(ArgumentError, "#{option}: atoms only")
  end

  @doc """
  Load declared Python workflows (and their step modules) so that their atoms exist: a list of
  declaration modules, or an OTP app whose modules are all loaded, as a release loads them.
  Returns the declaration modules found; raises if a listed module is not one.
  """
  @spec load!(atom() | [module()]) :: [module()]
  def load!(modules) when is_list(modules) do
    for module <- modules do
      Code.ensure_loaded!(module)

      unless function_exported?(module, :__python_workflow__, 0),
        do: raise(ArgumentError, "#{inspect(module)} is not an ObanBridge.PythonWorkflow")

      Enum.each(module.__python_workflow__().python_steps, &Code.ensure_loaded!/1)
      module
    end
  end

  def load!(app) when is_atom(app) do
    :ok = with {:error, {:already_loaded, ^app}} <- Application.load(app), do: :ok
    modules = Application.spec(app, :modules) || []
    :ok = :code.ensure_modules_loaded(modules)
    Enum.filter(modules, &function_exported?(&1, :__python_workflow__, 0))
  end

  alias ObanBridge.Protocol
  require Logger

  defmodule ForeignRunnerError do
    @moduledoc """
    HephaestusOban's own runner (not the Python one) took a job of a Python-owned workflow and
    called one of its callbacks. Raised before that worker writes anything; the job is handed
    back to the Python runner (`ObanBridge.PythonWorkflow.hand_back/2`).
    """
    defexception [:message]
  end

  @workers ~w(HephaestusOban.ResumeWorker HephaestusOban.AdvanceWorker HephaestusOban.ExecuteStepWorker)
  @handable ~w(available scheduled retryable)
  # How long a hand-back waits for the refused job to leave `executing` (Oban records its
  # error right after the raise; this only bounds a node that is shutting down).
  @hand_back_wait_ms 30_000

  @doc """
  Resume through `resume/3` with the declaration's defaults, the way its facade `resume/2`
  builds the id (`"<unique key>::<value>"`). `:ok` or `{:error, reason}`, as the runner's.
  """
  @spec resume_declared(module(), String.t(), atom() | String.t()) :: :ok | {:error, term()}
  def resume_declared(workflow, value, event) when is_binary(value) do
    id =
      case workflow.__python_workflow__().unique_key do
        nil -> value
        key -> "#{key}::#{value}"
      end

    case resume(id, event) do
      {:ok, _job} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end

  @spec resume(String.t(), atom() | String.t(), keyword()) ::
          {:ok, Oban.Job.t()} | {:error, term()}
  def resume(instance_id, event, opts \\ []) when is_binary(instance_id) do
    repo = Protocol.setting(:repo)

    sql =
      "SELECT workflow, workflow_version, status, state->>'current_step' " <>
        "FROM #{Protocol.table("workflow_instances")} WHERE id = $1::text"

    case repo.query!(sql, [instance_id]).rows do
      [] ->
        {:error, :instance_not_found}

      [[workflow, version, status, current]] ->
        step_ref = opts |> Keyword.get(:step_ref, current) |> then(&(&1 && to_string(&1)))

        if status != "waiting" or is_nil(step_ref) do
          {:error, :not_waiting}
        else
          insert(instance_id, workflow, version, step_ref, to_string(event), opts)
        end
    end
  end

  defp insert(instance_id, workflow, version, step_ref, event, opts) do
    runner = python_runner(workflow, opts)

    args = %{
      "instance_id" => instance_id,
      "step_ref" => step_ref,
      "event" => event,
      "config_key" => runner.config_key,
      "workflow" => workflow,
      "workflow_version" => version
    }

    meta = job_meta(runner, workflow, instance_id, version, short_name(step_ref))
    job = job("HephaestusOban.ResumeWorker", args, runner, meta, 3, [])
    Oban.insert(Keyword.get(opts, :oban) || Protocol.setting(:oban, Oban), job)
  end

  # The Python runner's queue, config key, tags and metadata for `workflow`: the options given,
  # else its declaration's, else `config :oban_bridge, python_queue: ..., python_config_key: ...`,
  # else the Python runner's defaults.
  defp python_runner(workflow, opts) do
    declared = declaration_of(workflow)

    pick = fn option, setting, default ->
      Keyword.get(opts, option) || (declared && Map.get(declared, option)) ||
        Protocol.setting(setting, default)
    end

    %{
      queue: pick.(:queue, :python_queue, "bridge_workflows"),
      config_key: pick.(:config_key, :python_config_key, "bridge"),
      tags: Keyword.get(opts, :tags) || (declared && declared.tags) || [],
      metadata: Keyword.get(opts, :metadata) || (declared && declared.metadata) || %{}
    }
  end

  defp declaration_of(workflow) when is_binary(workflow) do
    module = String.to_existing_atom(workflow)
    declaration_of(module)
  rescue
    ArgumentError -> nil
  end

  defp declaration_of(module) when is_atom(module) do
    if Code.ensure_loaded?(module) and function_exported?(module, :__python_workflow__, 0),
      do: module.__python_workflow__(),
      else: nil
  end

  # HephaestusOban.JobMetadata.build/3's meta: workflow metadata < the system keys.
  defp job_meta(runner, workflow, instance_id, version, step) do
    system = %{
      "heph_workflow" => short_name(workflow),
      "instance_id" => instance_id,
      "workflow_version" => version
    }

    system = if step, do: Map.put(system, "step", step), else: system
    runner.metadata |> Protocol.stringify() |> Map.merge(system)
  end

  defp job(worker, args, runner, meta, max_attempts, opts) do
    Oban.Job.new(
      args,
      [
        worker: worker,
        queue: runner.queue,
        max_attempts: max_attempts,
        meta: meta,
        tags: Enum.uniq([short_name(args["workflow"]) | runner.tags])
      ] ++ opts
    )
  end

  defp short_name(nil), do: nil

  defp short_name(module),
    do: module |> to_string() |> String.split(".") |> List.last() |> Macro.underscore()

  @doc """
  Refuse a callback HephaestusOban's own runner made on a Python-owned workflow (`what`: `:start`,
  `:transit` or a Python step module): start `hand_back/2` in a process of its own (this one is
  inside the worker's transaction, which the raise rolls back) and raise `ForeignRunnerError`.

  This is what makes `MyApp.Hephaestus.resume/2` (HephaestusOban.Runner.resume/2, which queues a
  ResumeWorker with the Elixir runner's config key) and any job of the instance that reaches the
  Elixir runner end in the Python runner instead of running the declaration as a workflow.
  """
  @spec refuse!(module(), atom()) :: no_return()
  def refuse!(workflow, what) do
    runner = python_runner(workflow, [])
    {:ok, _pid} = Task.start(fn -> hand_back(workflow) end)

    raise ForeignRunnerError,
      message:
        "#{inspect(workflow)} is a Python-owned workflow (ObanBridge.PythonWorkflow): " <>
          "#{describe(what)} runs in the Python runner (queue #{inspect(runner.queue)}, " <>
          "config key #{inspect(runner.config_key)}), not in HephaestusOban's; this job is " <>
          "handed back to it. Resume with #{inspect(workflow)}.resume/2."
  end

  defp describe(:start), do: "its start"
  defp describe(:transit), do: "its transitions"
  defp describe(step), do: "step #{inspect(step)}"

  @doc """
  Hand every job of `workflow` that another HephaestusOban runner holds (a worker of
  HephaestusOban, `args.workflow` this workflow, another queue or config key than the Python
  runner's) back to the Python runner, waiting for executing ones to finish their attempt:

  - a ResumeWorker or AdvanceWorker is cancelled and the Python runner's twin inserted in the
    same transaction (same args but the config key, its queue, meta and tags, a resume keeps its
    `scheduled_at`; an advance only if no unstarted advance of the Python runner exists for
    the instance, checked under the instance's lock as the Python runner's own recorders do);
  - an ExecuteStepWorker is cancelled (never discarded: a discarded step job fails the instance
    in both runners); the step is the Python runner's, which queued its own job for it.

  Returns the ids of the jobs handed back. Idempotent: a job another hand-back took is skipped.
  """
  @spec hand_back(module(), keyword()) :: [integer()]
  def hand_back(workflow, opts \\ []) do
    deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :wait_ms, @hand_back_wait_ms)
    hand_back_until(workflow, python_runner(workflow, []), deadline, [])
  end

  defp hand_back_until(workflow, runner, deadline, done) do
    jobs = foreign_jobs(workflow, runner)
    {executing, waiting} = Enum.split_with(jobs, &(&1.state == "executing"))
    done = done ++ Enum.filter(Enum.map(waiting, &take_over(&1, workflow, runner)), & &1)

    if executing != [] and System.monotonic_time(:millisecond) < deadline do
      Process.sleep(50)
      hand_back_until(workflow, runner, deadline, done)
    else
      done
    end
  end

  defp foreign_jobs(workflow, runner) do
    sql = """
    SELECT id, worker, state::text, args->>'instance_id', args->>'step_ref', args->>'event',
           args->>'config_key', args->>'workflow_version', meta->>'step'
    FROM #{Protocol.table("oban_jobs")}
    WHERE worker = ANY($1) AND args->>'workflow' = $2
      AND (queue <> $3 OR args->>'config_key' IS DISTINCT FROM $4)
      AND state::text = ANY($5)
    ORDER BY id
    """

    params = [@workers, Atom.to_string(workflow), runner.queue, runner.config_key]

    for [id, worker, state, instance, step, event, key, version, meta_step] <-
          Protocol.setting(:repo).query!(sql, params ++ [["executing" | @handable]]).rows do
      %{
        id: id,
        worker: worker,
        state: state,
        instance_id: instance,
        step_ref: step,
        event: event,
        config_key: key,
        version: version && String.to_integer(to_string(version)),
        meta_step: meta_step
      }
    end
  end

  defp take_over(job, workflow, runner) do
    repo = Protocol.setting(:repo)

    {:ok, taken} =
      repo.transaction(fn ->
        cancel = """
        UPDATE #{Protocol.table("oban_jobs")}
        SET state = 'cancelled', cancelled_at = timezone('UTC', now())
        WHERE id = $1 AND state::text = ANY($2)
        RETURNING scheduled_at > timezone('UTC', now()), scheduled_at::text
        """

        case repo.query!(cancel, [job.id, @handable]).rows do
          [] -> nil
          [[later, at]] -> twin(repo, job, workflow, runner, later, at) && job.id
        end
      end)

    if taken do
      Logger.warning(
        "ObanBridge: #{job.worker} job #{job.id} of the Python-owned instance " <>
          "#{inspect(job.instance_id)} came from config key #{inspect(job.config_key)}; " <>
          "cancelled and handed back to the Python runner (queue #{inspect(runner.queue)}, " <>
          "config key #{inspect(runner.config_key)})"
      )
    end

    taken
  end

  defp twin(_repo, %{worker: "HephaestusOban.ExecuteStepWorker"}, _workflow, _runner, _, _),
    do: true

  defp twin(repo, %{worker: "HephaestusOban.ResumeWorker"} = job, workflow, runner, later, at) do
    args =
      Map.merge(base_args(job, workflow, runner), %{
        "step_ref" => job.step_ref,
        "event" => job.event
      })

    meta = job_meta(runner, workflow, job.instance_id, job.version, short_name(job.step_ref))
    scheduled = if later, do: [scheduled_at: parse_utc(at)], else: []
    insert_twin(repo, job("HephaestusOban.ResumeWorker", args, runner, meta, 3, scheduled))
  end

  defp twin(repo, %{worker: "HephaestusOban.AdvanceWorker"} = job, workflow, runner, _, _) do
    repo.query!("SELECT pg_advisory_xact_lock_shared($1)", [:erlang.phash2(job.instance_id)])

    unstarted = """
    SELECT 1 FROM #{Protocol.table("oban_jobs")}
    WHERE state IN ('available', 'scheduled') AND worker = 'HephaestusOban.AdvanceWorker'
      AND args @> jsonb_build_object('instance_id', $1::text, 'config_key', $2::text)
    """

    if repo.query!(unstarted, [job.instance_id, runner.config_key]).rows == [] do
      meta = job_meta(runner, workflow, job.instance_id, job.version, job.meta_step)
      args = base_args(job, workflow, runner)
      insert_twin(repo, job("HephaestusOban.AdvanceWorker", args, runner, meta, 20, []))
    else
      true
    end
  end

  defp base_args(job, workflow, runner) do
    %{
      "instance_id" => job.instance_id,
      "config_key" => runner.config_key,
      "workflow" => Atom.to_string(workflow),
      "workflow_version" => job.version
    }
  end

  defp insert_twin(_repo, job) do
    {:ok, _job} = Oban.insert(Protocol.setting(:oban, Oban), job)
    true
  end

  defp parse_utc(text) do
    {:ok, naive} = NaiveDateTime.from_iso8601(text)
    DateTime.from_naive!(naive, "Etc/UTC")
  end
end
