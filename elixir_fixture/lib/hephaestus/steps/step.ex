defmodule Hephaestus.Steps.Step do
  @moduledoc """
  The step behaviour of hephaestus_core 0.3.1 (lib/hephaestus/steps/step.ex), same callbacks and
  result shapes: `execute/3` returns `{:ok, event}`, `{:ok, event, context_updates}`,
  `{:ok, event, context_updates, metadata_updates}`, `{:async}` or `{:error, reason}`;
  `events/0` lists the events; `step_key/0` (context key) and `retry_config/0` are optional.
  """

  @type config :: map() | nil
  @type event :: atom()
  @type retry_config :: %{
          max_attempts: pos_integer(),
          backoff: :exponential | :linear | :constant,
          max_backoff: pos_integer()
        }
  @type result ::
          {:ok, event()}
          | {:ok, event(), map()}
          | {:ok, event(), map(), map()}
          | {:async}
          | {:error, term()}

  @callback events() :: [event()]
  @callback step_key() :: atom()
  @callback retry_config() :: retry_config()
  @callback execute(Hephaestus.Core.Instance.t(), config(), Hephaestus.Core.Context.t()) ::
              result()

  @optional_callbacks step_key: 0, retry_config: 0
end
