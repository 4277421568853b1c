defmodule BadgeForge.PrintCenter do
  @moduledoc """
  The Elixir half of `examples/badge_forge`: the worker that "prints" a badge the Python worker
  `badge_forge.generator.GenerateBadge` rendered and enqueued into queue `printing`.

  Args: `badge_id`, `name`, `png` (Base64), `sha256` (hex), `width`, `height`. It decodes the
  image with the VM's own Base64, checks the PNG signature and header size and the digest with
  `:crypto`, logs one line on stderr (`[print-center] printed badge …`) and returns a summary,
  recorded in meta as `Fixture.Echo`'s `record` does, so a test reads what the BEAM saw. A badge
  that does not match its claims returns `{:error, reason}` and is retried like any failure.
  """

  @behaviour Fixture.Worker

  @png_signature <<137, 80, 78, 71, 13, 10, 26, 10>>

  @impl true
  def perform(%{args: args, attempt: attempt}) do
    with {:ok, png} <- decode(args["png"]),
         {:ok, width, height} <- header(png),
         digest = sha256(png),
         :ok <- same("sha256", digest, args["sha256"]),
         :ok <- same("width", width, args["width"]),
         :ok <- same("height", height, args["height"]) do
      line =
        "[print-center] printed badge #{args["badge_id"]} for #{args["name"]}: " <>
          "#{width}x#{height} PNG, #{byte_size(png)} bytes, sha256 #{digest}\n"

      # The device is in unicode mode: chardata, so UTF-8 names arrive as written.
      IO.write(:standard_error, line)

      {:ok,
       %{
         "badge_id" => args["badge_id"],
         "name" => args["name"],
         "bytes" => byte_size(png),
         "width" => width,
         "height" => height,
         "sha256" => digest,
         "attempt" => attempt
       }}
    end
  end

  @impl true
  def backoff(job), do: Fixture.Worker.backoff(job)

  @impl true
  def timeout(job), do: Fixture.Worker.timeout(job)

  @doc "The summary, stored like a recorded worker's return value (base64 ETF, no padding)."
  def recorded(_job, {:ok, summary}) do
    encoded = summary |> :erlang.term_to_binary() |> Base.encode64(padding: false)
    %{"recorded" => true, "return" => encoded}
  end

  def recorded(_job, _result), do: nil

  defp decode(text) when is_binary(text) do
    case Base.decode64(text) do
      {:ok, png} -> {:ok, png}
      :error -> {:error, "png is not Base64"}
    end
  end

  defp decode(_other), do: {:error, "png is missing"}

  defp header(<<@png_signature, _length::32, "IHDR", width::32, height::32, _rest::binary>>),
    do: {:ok, width, height}

  defp header(_other), do: {:error, "not a PNG image"}

  defp sha256(data), do: :sha256 |> :crypto.hash(data) |> Base.encode16(case: :lower)

  defp same(_field, value, value), do: :ok

  defp same(field, actual, claimed),
    do:
      {:error,
       "#{field} mismatch: the badge has #{inspect(actual)}, the job says #{inspect(claimed)}"}
end
