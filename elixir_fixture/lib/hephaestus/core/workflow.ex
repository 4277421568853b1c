defmodule Hephaestus.Core.Workflow do
  @moduledoc """
  The workflow callbacks of hephaestus_core 0.3.1 (lib/hephaestus/core/workflow.ex): `start/0`
  returns the first step (or `{step, config}`), `transit/3` maps `(from, event, context)` to a
  step, `{step, config}` or a list of them (fan-out).
  """
  @type target :: module() | {module(), map()}
  @callback start() :: target()
  @callback transit(module(), atom(), Hephaestus.Core.Context.t()) :: target() | [target()]
end

defmodule Hephaestus.Workflow do
  @moduledoc """
  `use Hephaestus.Workflow` as in hephaestus_core 0.3.1, an honest subset. Options: `tags`,
  `metadata`, `unique` (`[key: "...", scope: ...]`, see `Hephaestus.Workflow.Unique`),
  `version` (default 1). At compile time it reads `start/0` and every `transit/3` clause the way
  upstream does (`Module.get_definition/2`; a clause whose body computes its target declares
  the possible ones in `@targets` just before it), builds the graph and defines `__tags__/0`,
  `__metadata__/0`, `__unique__/0`, `__predecessors__/1` (in-neighbours: the steps a join waits
  for), `__graph__/0` (out-neighbours), `__edges__/0`, `__version__/0`, `__versioned__?/0` and
  `resolve_version/1`.

  Not mirrored: upstream's definition-time validation (cycles, reachability, leaves, declared
  events, context-key collisions), umbrella `versions:` workflows and the facade functions
  (`start/2`, `resume/2`, ...) that need a `use Hephaestus` entry module.
  """

  defmacro __using__(opts) do
    quote bind_quoted: [opts: opts] do
      @behaviour Hephaestus.Core.Workflow
      Module.register_attribute(__MODULE__, :hephaestus_dynamic_edges, accumulate: true)
      Module.register_attribute(__MODULE__, :targets, persist: false)
      @on_definition Hephaestus.Workflow
      @before_compile Hephaestus.Workflow
      @hephaestus_tags Keyword.get(opts, :tags, [])
      @hephaestus_metadata Keyword.get(opts, :metadata, %{})
      @hephaestus_unique Keyword.get(opts, :unique, nil)
      @hephaestus_version Keyword.get(opts, :version, 1)
    end
  end

  @doc false
  def __on_definition__(env, _kind, :transit, [from, event, _ctx], _guards, _body) do
    if targets = Module.get_attribute(env.module, :targets) do
      Module.delete_attribute(env.module, :targets)

      Module.put_attribute(env.module, :hephaestus_dynamic_edges, %{
        from: Macro.expand(from, env),
        event: Macro.expand(event, env),
        targets: Enum.map(List.wrap(targets), &Macro.expand(&1, env)),
        dynamic?: true
      })
    end
  end

  def __on_definition__(_env, _kind, _name, _args, _guards, _body), do: :ok

  defmacro __before_compile__(env) do
    module = env.module
    version = Module.get_attribute(module, :hephaestus_version)

    unless is_integer(version) and version > 0,
      do: raise(CompileError, description: "version: must be a positive integer", file: env.file)

    unique =
      case Module.get_attribute(module, :hephaestus_unique) do
        nil -> nil
        opts -> Hephaestus.Workflow.Unique.new!(opts)
      end

    start = start_step(env)
    dynamic = Enum.reverse(Module.get_attribute(module, :hephaestus_dynamic_edges) || [])
    edges = static_edges(env, dynamic) ++ dynamic
    vertices = Enum.uniq([start | Enum.flat_map(edges, &[&1.from | &1.targets])])

    graph =
      Map.new(vertices, fn v ->
        {v, edges |> Enum.filter(&(&1.from == v)) |> Enum.flat_map(& &1.targets) |> Enum.uniq()}
      end)

    predecessors =
      Map.new(vertices, fn v ->
        {v, for(e <- edges, v in e.targets, into: MapSet.new(), do: e.from)}
      end)

    quote do
      @doc false
      def __tags__, do: unquote(Module.get_attribute(module, :hephaestus_tags))
      @doc false
      def __metadata__,
        do: unquote(Macro.escape(Module.get_attribute(module, :hephaestus_metadata)))

      @doc false
      def __unique__, do: unquote(Macro.escape(unique))
      @doc false
      def __predecessors__(step),
        do: Map.get(unquote(Macro.escape(predecessors)), step, MapSet.new())

      @doc false
      def __graph__, do: unquote(Macro.escape(graph))
      @doc false
      def __edges__, do: unquote(Macro.escape(edges))
      @doc false
      def __version__, do: unquote(version)
      @doc false
      def __versioned__?, do: false
      @doc false
      def resolve_version(nil), do: {unquote(version), __MODULE__}
      def resolve_version(v) when v == unquote(version), do: {v, __MODULE__}

      def resolve_version(v),
        do:
          raise(
            ArgumentError,
            "#{inspect(__MODULE__)} only supports version #{unquote(version)}, got: #{inspect(v)}"
          )
    end
  end

  defp start_step(env) do
    case Module.get_definition(env.module, {:start, 0}) do
      {:v1, :def, _meta, [{_clause_meta, [], [], body}]} -> target!(body, env)
      _ -> raise CompileError, description: "workflow must define start/0", file: env.file
    end
  end

  defp static_edges(env, dynamic) do
    dynamic_keys = MapSet.new(dynamic, &{&1.from, &1.event})

    case Module.get_definition(env.module, {:transit, 3}) do
      nil ->
        []

      {:v1, :def, _meta, clauses} ->
        for {_clause_meta, [from, event, _ctx], _guards, body} <- clauses,
            not MapSet.member?(dynamic_keys, {from, event}),
            do: %{from: from, event: event, targets: targets!(body, env), dynamic?: false}
    end
  end

  defp targets!(list, env) when is_list(list), do: Enum.map(list, &target!(&1, env))
  defp targets!(body, env), do: [target!(body, env)]

  defp target!({module, _config}, _env) when is_atom(module), do: module
  defp target!(module, _env) when is_atom(module), do: module

  defp target!(other, env) do
    raise CompileError,
      file: env.file,
      description:
        "transit/3 and start/0 must return step modules, {step, config} or lists of them " <>
          "(or declare @targets), got: #{Macro.to_string(other)}"
  end
end

defmodule Hephaestus.Workflow.Unique do
  @moduledoc "hephaestus_core's business key (`key` [a-z0-9]+, `scope`)."
  @enforce_keys [:key]
  defstruct [:key, scope: :workflow]

  @type t :: %__MODULE__{key: String.t(), scope: :workflow | :version | :global | :none}

  @spec new!(keyword()) :: t()
  def new!(opts) do
    unique = struct!(__MODULE__, opts)

    unless is_binary(unique.key) and Regex.match?(~r/^[a-z0-9]+$/, unique.key),
      do: raise(ArgumentError, "unique key must contain only [a-z0-9], got: #{inspect(unique.key)}")

    unless unique.scope in [:workflow, :version, :global, :none],
      do: raise(ArgumentError, "invalid unique scope: #{inspect(unique.scope)}")

    unique
  end
end

defmodule Hephaestus.Uniqueness do
  @moduledoc "hephaestus_core's ids: `\"<key>::<value>\"`, the value [a-z0-9]+ or a lower-case UUID."

  @spec build_id(Hephaestus.Workflow.Unique.t(), String.t()) :: String.t()
  def build_id(%Hephaestus.Workflow.Unique{key: key}, value) do
    validate_value!(value)
    "#{key}::#{value}"
  end

  @spec validate_value!(String.t()) :: :ok
  def validate_value!(value) when is_binary(value) do
    uuid = ~r/^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$/

    if Regex.match?(~r/^[a-z0-9]+$/, value) or Regex.match?(uuid, value),
      do: :ok,
      else:
        raise(
          ArgumentError,
          "invalid id value: #{inspect(value)}. Must be [a-z0-9]+ or a valid UUID"
        )
  end

  @spec extract_value(String.t()) :: String.t()
  def extract_value(id) do
    case String.split(id, "::") do
      [_key, value] -> value
      [_key, value, _suffix] -> value
      _ -> raise ArgumentError, "invalid unique id format: #{id}"
    end
  end
end
