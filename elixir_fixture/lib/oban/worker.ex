defmodule Oban.Worker do
  @moduledoc """
  `use Oban.Worker` as in Oban 2.23 (lib/oban/worker.ex): stores the options (`queue`,
  `max_attempts`, `priority`, `tags`, `unique`, `replace`), defines `new/2` (the worker's options
  merged under the caller's, `unique` and `replace` lists merged key by key, `worker:` set to the
  module), `__opts__/0`, and overridable `backoff/1` and `timeout/1` with Oban's defaults.

  The fixture's executor (`Fixture.Executor`) runs such a module like any fixture worker but
  hands `perform/1`, `backoff/1` and `timeout/1` an `%Oban.Job{}`, so clauses matching
  `%Oban.Job{args: %{...}}` work unchanged.
  """

  @callback perform(Oban.Job.t()) :: term()
  @callback backoff(Oban.Job.t()) :: non_neg_integer()
  @callback timeout(Oban.Job.t()) :: pos_integer() | :infinity

  @optional_callbacks backoff: 1, timeout: 1

  defmacro __using__(opts) do
    quote bind_quoted: [opts: opts] do
      @behaviour Oban.Worker

      @__opts__ Keyword.put(opts, :worker, __MODULE__)

      @doc false
      def __opts__, do: @__opts__

      @doc false
      def __oban_worker__, do: true

      @doc "Oban.Worker's new/2: a job for this worker."
      @spec new(map(), keyword()) :: Oban.Job.t()
      def new(args, opts \\ []) when is_map(args) and is_list(opts) do
        Oban.Job.new(args, Oban.Worker.merge_opts(@__opts__, opts))
      end

      @impl Oban.Worker
      def backoff(%Oban.Job{} = job), do: Oban.Worker.backoff(job)

      @impl Oban.Worker
      def timeout(%Oban.Job{}), do: :infinity

      defoverridable backoff: 1, timeout: 1
    end
  end

  @doc false
  @spec merge_opts(keyword(), keyword()) :: keyword()
  def merge_opts(base, opts) do
    Keyword.merge(base, opts, fn
      key, left, right when key in [:unique, :replace] and is_list(left) and is_list(right) ->
        if Keyword.keyword?(left) and Keyword.keyword?(right),
          do: Keyword.merge(left, right),
          else: right

      _key, _left, right ->
        right
    end)
  end

  @doc "Oban.Worker.backoff/1: the fixture's copy of Oban's default exponential backoff."
  @spec backoff(Oban.Job.t()) :: non_neg_integer()
  def backoff(%Oban.Job{attempt: attempt, max_attempts: max_attempts}) do
    Fixture.Worker.backoff(%Fixture.Job{attempt: attempt, max_attempts: max_attempts})
  end

  @doc "Whether a module was defined with `use Oban.Worker`."
  @spec oban_worker?(module()) :: boolean()
  def oban_worker?(module), do: function_exported?(module, :__oban_worker__, 0)
end
