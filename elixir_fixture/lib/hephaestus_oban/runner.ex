defmodule HephaestusOban.Runner do
  @moduledoc """
  hephaestus_oban 0.5.0's runner (lib/hephaestus_oban/runner.ex).

  - `start_link(config_key:, repo:, oban:, storage:)` stores the config in `:persistent_term`
    under `{HephaestusOban, :config, config_key}` (the workers look it up by the `config_key`
    of their args, so an atom key registered here never matches a job's string: golden
    runner-config-key) and "attaches" `HephaestusOban.FailureHandler` (see there).
  - `start_instance(workflow, context, storage:, config_key:, oban:, id:, workflow_version:)`:
    `Instance.new/4`, `storage.put`, then an `AdvanceWorker` job (args `instance_id`,
    `config_key`, `workflow`, `workflow_version`; meta/tags from `JobMetadata.build/2`) —
    two separate writes, as upstream (no transaction around them).
  - `resume(instance_id, event)`: finds the instance in any registered config; only while
    `current_step` is set (else `{:error, :instance_not_found}`); inserts a `ResumeWorker` job.
  - `schedule_resume(instance_id, step_ref, delay_ms)`: a `ResumeWorker` job with event
    `"timeout"`, `scheduled_at` now + delay.
  """

  alias Hephaestus.Core.Instance
  alias HephaestusOban.{AdvanceWorker, FailureHandler, JobMetadata, ResumeWorker}

  @spec start_link(keyword()) :: :ignore
  def start_link(opts) do
    config = %{
      key: Keyword.fetch!(opts, :config_key),
      repo: Keyword.fetch!(opts, :repo),
      oban: Keyword.fetch!(opts, :oban),
      storage: Keyword.fetch!(opts, :storage)
    }

    :persistent_term.put({HephaestusOban, :config, config.key}, config)
    :ok = FailureHandler.attach()
    :ignore
  end

  @spec start_instance(module(), map(), keyword()) :: {:ok, String.t()} | {:error, term()}
  def start_instance(workflow, context, opts) when is_atom(workflow) and is_map(context) do
    storage = Keyword.fetch!(opts, :storage)
    config_key = Keyword.fetch!(opts, :config_key)
    oban = Keyword.fetch!(opts, :oban)
    version = Keyword.get(opts, :workflow_version, 1)

    instance = Instance.new(workflow, version, context, Keyword.fetch!(opts, :id))
    :ok = storage_call(storage, :put, [instance])

    args = %{
      "instance_id" => instance.id,
      "config_key" => config_key,
      "workflow" => to_string(workflow),
      "workflow_version" => version
    }

    case Oban.insert(oban, AdvanceWorker.new(args, JobMetadata.build(workflow, instance.id))) do
      {:ok, _job} -> {:ok, instance.id}
      {:error, reason} -> {:error, reason}
    end
  end

  @spec resume(String.t(), atom()) :: :ok | {:error, term()}
  def resume(instance_id, event) when is_binary(instance_id) and is_atom(event) do
    with {:ok, config, instance} <- find_instance(instance_id),
         step when not is_nil(step) <- instance.current_step,
         {:ok, _job} <- Oban.insert(config.oban, resume_job(config, instance, step, event, [])) do
      :ok
    else
      nil -> {:error, :instance_not_found}
      {:error, reason} -> {:error, reason}
    end
  end

  @spec schedule_resume(String.t(), atom(), pos_integer()) :: {:ok, integer()} | {:error, term()}
  def schedule_resume(instance_id, step_ref, delay_ms)
      when is_binary(instance_id) and is_atom(step_ref) and is_integer(delay_ms) and delay_ms > 0 do
    with {:ok, config, instance} <- find_instance(instance_id) do
      at = DateTime.add(DateTime.utc_now(), delay_ms, :millisecond)
      job = resume_job(config, instance, step_ref, :timeout, scheduled_at: at)

      case Oban.insert(config.oban, job) do
        {:ok, %Oban.Job{id: id}} -> {:ok, id}
        {:error, reason} -> {:error, reason}
      end
    end
  end

  defp resume_job(config, instance, step, event, opts) do
    args = %{
      "instance_id" => instance.id,
      "step_ref" => to_string(step),
      "event" => to_string(event),
      "config_key" => config.key,
      "workflow" => to_string(instance.workflow),
      "workflow_version" => instance.workflow_version
    }

    ResumeWorker.new(
      args,
      opts ++ JobMetadata.build(instance.workflow, instance.id, step_ref: step)
    )
  end

  # Every registered config, first whose storage has the instance (upstream scans
  # :persistent_term the same way).
  defp find_instance(instance_id) do
    :persistent_term.get()
    |> Enum.filter(&match?({{HephaestusOban, :config, _}, _}, &1))
    |> Enum.find_value({:error, :instance_not_found}, fn {_key, config} ->
      case storage_call(config.storage, :get, [instance_id]) do
        {:ok, instance} -> {:ok, config, instance}
        {:error, :not_found} -> nil
      end
    end)
  end

  @doc false
  def storage_call({module, name}, function, args), do: apply(module, function, [name | args])
end

defmodule HephaestusOban.FailureHandler do
  @moduledoc """
  hephaestus_oban 0.5.0's FailureHandler (lib/hephaestus_oban/failure_handler.ex) listens to
  `[:oban, :job, :stop]` with `state: :discard` for ExecuteStepWorker jobs and would insert an
  AdvanceWorker (without `workflow_version` in its args). Oban 2.23 reports a last-attempt error
  or raise as `[:oban, :job, :exception]`, and ExecuteStepWorker never returns `:discard`, so on
  the genuine stack it never fires (golden failing-step). The fixture has no telemetry:
  `attach/0` does nothing, which is the same behaviour; `handle_discarded/1` is what the handler
  would do, for a test that invokes it by hand as the golden capture did.
  """

  alias HephaestusOban.{AdvanceWorker, JobMetadata}

  @spec attach() :: :ok
  def attach, do: :ok

  @spec handle_discarded(Oban.Job.t()) :: {:ok, Oban.Job.t()} | {:error, term()} | :ok
  def handle_discarded(%Oban.Job{worker: "HephaestusOban.ExecuteStepWorker", args: args}) do
    %{"instance_id" => id, "config_key" => key, "step_ref" => step, "workflow" => workflow} = args
    config = :persistent_term.get({HephaestusOban, :config, key})
    meta = JobMetadata.build(JobMetadata.resolve_workflow(workflow), id, step_ref: step)

    %{"instance_id" => id, "config_key" => key, "workflow" => workflow}
    |> AdvanceWorker.new(meta)
    |> then(&Oban.insert(config.oban, &1))
  end

  def handle_discarded(_job), do: :ok
end
