defmodule ObanBridge.Protocol do
  @moduledoc """
  What both oban-bridge modules share: the application config, the delegated-job args
  (protocol 1, `docs/workflow-delegation.md` in oban-bridge) and the checks a remote outcome
  must pass before anything is written.

  Configuration (`config/config.exs`):

      config :oban_bridge,
        repo: MyApp.Repo,                 # the Ecto repo Oban and HephaestusOban use
        oban: Oban,                       # the Oban instance name
        prefix: "public",                 # the schema of oban_jobs / workflow_instances
        config_key: "Elixir.MyApp.Heph",  # HephaestusOban's config key (DelegatedStep)
        steps: [MyApp.Steps.Charge]       # the only step modules StepWorker may run

  Every value may also be given per module (`use ObanBridge.DelegatedStep, config_key: ...`).
  """

  @protocol 1
  @async "__async__"

  @doc "The protocol version both sides put in `args[\"protocol\"]`."
  @spec version() :: pos_integer()
  def version, do: @protocol

  @doc "A setting from the `:oban_bridge` application env, the given default, or a raise."
  @spec setting(atom(), term()) :: term()
  def setting(key, default \\ :__required__) do
    case Application.get_env(:oban_bridge, key, default) do
      :__required__ -> raise ArgumentError, "config :oban_bridge, #{inspect(key)} is not set"
      value -> value
    end
  end

  @doc "The prefix quoted as an SQL identifier followed by the table name."
  @spec table(String.t()) :: String.t()
  def table(name) do
    prefix = setting(:prefix, "public")
    ~s("#{String.replace(prefix, ~s("), ~s(""))}".#{name})
  end

  @doc "Hephaestus's context key of a step module: `step_key/0` or the underscored last segment."
  @spec context_key(module()) :: String.t()
  def context_key(module) do
    _ = Code.ensure_loaded(module)

    if function_exported?(module, :step_key, 0) do
      to_string(module.step_key())
    else
      module |> Module.split() |> List.last() |> Macro.underscore()
    end
  end

  @doc """
  Checks a remote step's event and context updates against what the owner declared.

  Returns `{:ok, event, context_updates}` (string keys) or `{:violation, message}`. Every map key
  at any depth of the updates must be a declared context key: the owner of an Elixir instance
  turns each one into an existing atom when it loads the instance.
  """
  @spec check_outcome(map(), term(), term()) :: {:ok, String.t(), map()} | {:violation, String.t()}
  def check_outcome(args, event, updates) do
    events = Map.fetch!(args, "events")
    keys = Map.fetch!(args, "context_keys")
    event = if is_atom(event) and not is_nil(event), do: Atom.to_string(event), else: event

    cond do
      event == @async ->
        {:violation, "#{inspect(@async)} is not an event a remote step may complete with"}

      not is_binary(event) or event not in events ->
        {:violation,
         "event #{inspect(event)} is not declared by #{args["step_ref"]} (events: #{inspect(events)})"}

      not is_map(updates) ->
        {:violation, "context updates must be a map, got: #{inspect(updates)}"}

      true ->
        plain = stringify(updates)

        case plain |> all_keys([]) |> Enum.uniq() |> Enum.reject(&(&1 in keys)) |> Enum.sort() do
          [] ->
            {:ok, event, plain}

          undeclared ->
            {:violation,
             "context update keys #{inspect(undeclared)} are not declared by " <>
               "#{args["step_ref"]} (context_keys: #{inspect(Enum.sort(keys))}); nothing was written"}
        end
    end
  end

  @doc "A JSON-shaped copy: atom keys and atom values (but nil/booleans) as strings."
  @spec stringify(term()) :: term()
  def stringify(%_{} = struct), do: struct |> Map.from_struct() |> stringify()

  def stringify(map) when is_map(map),
    do: Map.new(map, fn {k, v} -> {key_string(k), stringify(v)} end)

  def stringify(list) when is_list(list), do: Enum.map(list, &stringify/1)
  def stringify(value) when is_boolean(value) or is_nil(value), do: value
  def stringify(value) when is_atom(value), do: Atom.to_string(value)
  def stringify(value), do: value

  defp key_string(key) when is_atom(key), do: Atom.to_string(key)
  defp key_string(key) when is_binary(key), do: key
  defp key_string(key), do: to_string(key)

  defp all_keys(map, acc) when is_map(map) do
    Enum.reduce(map, acc, fn {k, v}, acc -> all_keys(v, [k | acc]) end)
  end

  defp all_keys(list, acc) when is_list(list), do: Enum.reduce(list, acc, &all_keys/2)
  defp all_keys(_value, acc), do: acc

  @doc "JSON map keys turned into existing atoms where such atoms exist (others stay strings)."
  @spec atomize(term()) :: term()
  def atomize(map) when is_map(map), do: Map.new(map, fn {k, v} -> {to_atom(k), atomize(v)} end)
  def atomize(list) when is_list(list), do: Enum.map(list, &atomize/1)
  def atomize(value), do: value

  defp to_atom(key) when is_binary(key) do
    String.to_existing_atom(key)
  rescue
    ArgumentError -> key
  end

  defp to_atom(key), do: key

  @doc """
  The step's standing, under the lock the caller holds: `:ready`, `:not_ready` or a no-op
  reason (`:gone`, `:finished`, `:inactive`, `:recorded`). With `waiting: true` (an Elixir-owned
  instance) the instance must also be `waiting` with no ExecuteStepWorker pending for the step.
  """
  @spec step_state(module(), String.t(), String.t(), boolean()) ::
          :ready | :not_ready | :gone | :finished | :inactive | :recorded
  def step_state(repo, instance_id, step_ref, waiting?) do
    results = table("hephaestus_step_results")

    sql = """
    SELECT i.status,
           coalesce(i.state->'active_steps', '[]'::jsonb) ? $2::text,
           EXISTS (SELECT 1 FROM #{results} r WHERE r.instance_id = i.id AND r.step_ref = $2::text
                   AND r.processed AND r.event = '__async__'),
           EXISTS (SELECT 1 FROM #{results} r WHERE r.instance_id = i.id AND r.step_ref = $2::text
                   AND NOT r.processed AND r.event = '__async__'),
           EXISTS (SELECT 1 FROM #{results} r WHERE r.instance_id = i.id AND r.step_ref = $2::text
                   AND NOT r.processed AND r.event <> '__async__'),
           EXISTS (SELECT 1 FROM #{table("oban_jobs")} j
                   WHERE j.worker = 'HephaestusOban.ExecuteStepWorker'
                     AND j.state IN ('available', 'scheduled', 'executing', 'retryable')
                     AND j.args @> jsonb_build_object('instance_id', i.id, 'step_ref', $2::text))
    FROM #{table("workflow_instances")} i WHERE i.id = $1::text FOR UPDATE
    """

    case repo.query!(sql, [instance_id, step_ref]).rows do
      [] ->
        :gone

      [[status | _]] when status in ["completed", "failed"] ->
        :finished

      [[_status, false | _]] ->
        :inactive

      [[_status, true, _done, _pending_async, true, _exec]] ->
        :recorded

      [[status, true, done, pending_async, false, exec]] ->
        cond do
          not done or pending_async -> :not_ready
          waiting? and (status != "waiting" or exec) -> :not_ready
          true -> :ready
        end
    end
  end

  @doc "Takes the lock every HephaestusOban AdvanceWorker takes for the instance."
  @spec lock(module(), String.t()) :: :ok
  def lock(repo, instance_id) do
    repo.query!("SELECT pg_advisory_xact_lock($1)", [:erlang.phash2(instance_id)])
    :ok
  end

  @doc """
  Inserts the owner's AdvanceWorker (ResumeWorker's shape) unless one that has not started yet
  exists on that queue: an unstarted advance takes the lock after us and reads our result; an
  executing one may already have read its results, so it does not count.
  """
  @spec enqueue_advance(term(), module(), map(), map(), [String.t()]) :: :ok
  def enqueue_advance(oban, repo, args, meta, tags) do
    queue = Map.fetch!(args, "advance_queue")

    sql = """
    SELECT 1 FROM #{table("oban_jobs")}
    WHERE state IN ('available', 'scheduled') AND worker = 'HephaestusOban.AdvanceWorker'
      AND queue = $1::text AND args @> jsonb_build_object('instance_id', $2::text)
    LIMIT 1
    """

    if repo.query!(sql, [queue, args["instance_id"]]).rows == [] do
      advance_args = Map.take(args, ["instance_id", "config_key", "workflow", "workflow_version"])

      job =
        Oban.Job.new(advance_args,
          worker: "HephaestusOban.AdvanceWorker",
          queue: queue,
          max_attempts: 20,
          meta: meta,
          tags: tags
        )

      {:ok, _job} = Oban.insert(oban, job)
    end

    :ok
  end

  @doc """
  The failure path of the instance's owner, under the lock: status `failed`, `current_step`
  null, pending results marked processed, every other pending job whose args name the instance
  cancelled (HephaestusOban's `cancel_pending_jobs` has no worker filter either).
  """
  @spec fail_instance(term(), module(), String.t(), integer() | nil) :: :ok
  def fail_instance(oban, repo, instance_id, own_job) do
    repo.query!(
      "UPDATE #{table("workflow_instances")} SET status = 'failed', " <>
        "state = jsonb_set(state, '{current_step}', 'null'::jsonb), " <>
        "updated_at = date_trunc('second', timezone('UTC', now())) WHERE id = $1::text",
      [instance_id]
    )

    repo.query!(
      "UPDATE #{table("hephaestus_step_results")} SET processed = true " <>
        "WHERE instance_id = $1::text AND NOT processed",
      [instance_id]
    )

    ids =
      repo.query!(
        "SELECT id FROM #{table("oban_jobs")} WHERE args @> jsonb_build_object('instance_id', $1::text) " <>
          "AND state IN ('available', 'scheduled', 'executing', 'retryable') AND id <> $2",
        [instance_id, own_job || 0]
      ).rows
      |> Enum.map(fn [id] -> id end)

    {:ok, _count} = cancel_all(oban, ids)
    :ok
  end

  # Oban.cancel_all_jobs/2 takes a queryable in Oban; the ids are selected above, so a query on
  # them is what a genuine app passes.
  if Code.ensure_loaded?(Ecto.Query) do
    defp cancel_all(_oban, []), do: {:ok, 0}

    defp cancel_all(oban, ids) do
      import Ecto.Query
      Oban.cancel_all_jobs(oban, from(j in Oban.Job, where: j.id in ^ids))
    end
  else
    defp cancel_all(oban, ids), do: Oban.cancel_all_jobs(oban, ids)
  end
end
