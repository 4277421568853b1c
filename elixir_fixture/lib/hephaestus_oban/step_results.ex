defmodule HephaestusOban.Schema.StepResult do
  @moduledoc """
  A `hephaestus_step_results` row as HephaestusOban's Ecto schema loads it
  (lib/hephaestus_oban/schema/step_result.ex): `context_updates` and `metadata_updates` are maps
  with string keys (Ecto's `:map` type), `inserted_at` is the text PostgreSQL prints.
  """
  defstruct [
    :id,
    :instance_id,
    :step_ref,
    :event,
    :inserted_at,
    workflow_version: 1,
    context_updates: %{},
    metadata_updates: %{},
    processed: false
  ]

  @type t :: %__MODULE__{}
end

defmodule HephaestusOban.StepResults do
  @moduledoc """
  hephaestus_oban 0.5.0's `HephaestusOban.StepResults` (lib/hephaestus_oban/step_results.ex),
  same functions and arguments (`repo` first: an Ecto-like repo, `Fixture.EctoRepo` here), as
  the SQL Ecto runs for them:

  - `insert/5,6,7` (`metadata_updates` default `%{}`, `workflow_version` default 1):
    `INSERT ... ON CONFLICT (instance_id, step_ref) WHERE NOT processed DO NOTHING`, the id a
    random UUID made by the caller (Ecto's `:binary_id` autogenerate), `inserted_at` and
    `processed` left to the column defaults. A conflict is silently nothing (`:ok`), as
    upstream — the second of two results for one step is dropped.
  - `exists?/3`: an unprocessed row for `(instance_id, step_ref)`.
  - `pending_for/2`: unprocessed rows of an instance, oldest `inserted_at` first (rows inserted in
    one transaction share `now()`; their order is then PostgreSQL's).
  - `mark_processed/2`: `processed = true` for the given rows' ids.
  """

  alias HephaestusOban.Schema.StepResult

  @columns "id, instance_id, step_ref, event, workflow_version, context_updates::text, " <>
             "metadata_updates::text, processed, inserted_at::text"

  @spec insert(module(), String.t(), String.t(), String.t(), map()) :: :ok
  def insert(repo, instance_id, step_ref, event, context_updates),
    do: insert(repo, instance_id, step_ref, event, context_updates, %{}, 1)

  @spec insert(module(), String.t(), String.t(), String.t(), map(), map()) :: :ok
  def insert(repo, instance_id, step_ref, event, context_updates, metadata_updates),
    do: insert(repo, instance_id, step_ref, event, context_updates, metadata_updates, 1)

  @spec insert(module(), String.t(), String.t(), String.t(), map(), map(), integer()) :: :ok
  def insert(repo, instance_id, step_ref, event, context_updates, metadata_updates, version) do
    for {field, value} <- [instance_id: instance_id, step_ref: step_ref, event: event],
        not (is_binary(value) and value != ""),
        do: raise(ArgumentError, "step result #{field} is required, got: #{inspect(value)}")

    sql = """
    INSERT INTO #{table()} AS h0 (id, instance_id, step_ref, event, workflow_version,
      context_updates, metadata_updates)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)
    ON CONFLICT (instance_id, step_ref) WHERE NOT processed DO NOTHING
    """

    repo.query!(sql, [
      uuid4(),
      instance_id,
      step_ref,
      event,
      version,
      Fixture.Json.encode(context_updates || %{}),
      Fixture.Json.encode(metadata_updates || %{})
    ])

    :ok
  end

  @spec exists?(module(), String.t(), String.t()) :: boolean()
  def exists?(repo, instance_id, step_ref) do
    sql =
      "SELECT TRUE FROM #{table()} AS h0 WHERE ((h0.instance_id = $1) AND (h0.step_ref = $2)) " <>
        "AND NOT (h0.processed) LIMIT 1"

    repo.query!(sql, [instance_id, step_ref]).rows != []
  end

  @spec pending_for(module(), String.t()) :: [StepResult.t()]
  def pending_for(repo, instance_id) do
    sql =
      "SELECT #{@columns} FROM #{table()} AS h0 WHERE (h0.instance_id = $1) " <>
        "AND NOT (h0.processed) ORDER BY h0.inserted_at"

    for row <- repo.query!(sql, [instance_id]).rows, do: from_row(row)
  end

  @spec mark_processed(module(), [StepResult.t()]) :: :ok
  def mark_processed(_repo, []), do: :ok

  def mark_processed(repo, results) do
    sql = "UPDATE #{table()} AS h0 SET processed = TRUE WHERE (h0.id = ANY($1::uuid[]))"
    repo.query!(sql, [Enum.map(results, & &1.id)])
    :ok
  end

  @doc "Every row of an instance (or of all instances), in insertion order, as `row_to_json`."
  @spec rows(module(), String.t() | nil) :: [map()]
  def rows(repo, instance_id) do
    {where, params} =
      if instance_id, do: {"WHERE h0.instance_id = $1", [instance_id]}, else: {"", []}

    sql =
      "SELECT row_to_json(h0)::text FROM #{table()} AS h0 #{where} ORDER BY h0.inserted_at, h0.id"

    for [json] <- repo.query!(sql, params).rows, do: Fixture.Json.decode(json)
  end

  defp from_row([id, instance_id, step_ref, event, version, context, metadata, processed, at]) do
    %StepResult{
      id: id,
      instance_id: instance_id,
      step_ref: step_ref,
      event: event,
      workflow_version: version,
      context_updates: Fixture.Json.decode(context),
      metadata_updates: Fixture.Json.decode(metadata),
      processed: processed,
      inserted_at: at
    }
  end

  defp table, do: Fixture.Config.table(Fixture.Config.get(), "hephaestus_step_results")

  defp uuid4 do
    <<a::48, _::4, b::12, _::2, c::62>> = :crypto.strong_rand_bytes(16)
    <<u0::32, u1::16, u2::16, u3::16, u4::48>> = <<a::48, 4::4, b::12, 2::2, c::62>>

    [<<u0::32>>, <<u1::16>>, <<u2::16>>, <<u3::16>>, <<u4::48>>]
    |> Enum.map_join("-", &Base.encode16(&1, case: :lower))
  end
end
