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

  The atoms exist once the module is loaded: a release loads every module at boot; in
  interactive mode (`mix run`, `iex -S mix`) call `load!/1` in your `Application.start/2`
  before anything lists instances: `ObanBridge.PythonWorkflow.load!(:my_app)`.

  ## Resuming a waiting step of a Python-owned workflow

  The Python runner (oban-bridge's `WorkflowRunner`) runs HephaestusOban's three workers, under
  their names, on a queue of its own. Resuming is what its own `resume` does: insert a
  `HephaestusOban.ResumeWorker` job on that queue, args `instance_id`, `step_ref`, `event`,
  `config_key`, `workflow`, `workflow_version`, `max_attempts` 3, meta and tags as
  `HephaestusOban.JobMetadata.build/3` would give them for the step.

      ObanBridge.PythonWorkflow.resume("order::o-1", :shipped,
        queue: "bridge_workflows", config_key: "bridge")

  Options: `step_ref` (default: the instance's `current_step`), `queue` ("bridge_workflows"),
  `config_key` ("bridge"), `oban`, `tags` and `metadata` (the Python workflow's own, if it has
  any). Returns `{:ok, %Oban.Job{}}`, `{:error, :instance_not_found}` or
  `{:error, :not_waiting}`.
  """

  @typedoc "What `use ObanBridge.PythonWorkflow` pinned, as `__python_workflow__/0` returns it."
  @type declaration :: %{
          name: module(),
          python_steps: [module()],
          elixir_steps: [module()],
          step_keys: %{module() => atom()},
          events: [atom()],
          context_keys: [atom()]
        }

  defmacro __using__(opts) do
    quote bind_quoted: [opts: opts] do
      declaration = ObanBridge.PythonWorkflow.__declaration__(__MODULE__, opts)

      for {step, key, events} <- ObanBridge.PythonWorkflow.__python_steps__(opts) do
        defmodule step do
          @moduledoc false
          # A Python step, declared so that rows naming it load here; it runs only in Python.
          def events, do: unquote(events)
          def step_key, do: unquote(key)
          def __python_step_of__, do: unquote(__MODULE__)
        end
      end

      @doc false
      @spec __python_workflow__() :: ObanBridge.PythonWorkflow.declaration()
      def __python_workflow__, do: unquote(Macro.escape(declaration))
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
    unknown = Keyword.keys(opts) -- [:name, :python_steps, :elixir_steps, :context_keys]
    if unknown != [], do: raise(ArgumentError, "unknown options #{inspect(unknown)}")

    steps = python ++ elixir

    %{
      name: module,
      python_steps: for({step, _key, _events} <- python, do: step),
      elixir_steps: for({step, _key, _events} <- elixir, do: step),
      step_keys: Map.new(steps, fn {step, key, _events} -> {step, key} end),
      events: steps |> Enum.flat_map(fn {_step, _key, events} -> events end) |> Enum.uniq(),
      context_keys: context_keys
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
    short = fn module -> module |> String.split(".") |> List.last() |> Macro.underscore() end

    meta =
      opts
      |> Keyword.get(:metadata, %{})
      |> Protocol.stringify()
      |> Map.merge(%{
        "heph_workflow" => short.(workflow),
        "instance_id" => instance_id,
        "workflow_version" => version,
        "step" => short.(step_ref)
      })

    args = %{
      "instance_id" => instance_id,
      "step_ref" => step_ref,
      "event" => event,
      "config_key" => Keyword.get(opts, :config_key, "bridge"),
      "workflow" => workflow,
      "workflow_version" => version
    }

    job =
      Oban.Job.new(args,
        worker: "HephaestusOban.ResumeWorker",
        queue: Keyword.get(opts, :queue, "bridge_workflows"),
        max_attempts: 3,
        meta: meta,
        tags: Enum.uniq([short.(workflow) | Keyword.get(opts, :tags, [])])
      )

    Oban.insert(Keyword.get(opts, :oban) || Protocol.setting(:oban, Oban), job)
  end
end
