defmodule ObanBridge.MixProject do
  use Mix.Project

  @version "0.1.0"

  # The Elixir side of oban-bridge (Python workers and workflows sharing one PostgreSQL database
  # with Oban and Hephaestus). Add it to an app that already runs Oban and HephaestusOban:
  #
  #     {:oban_bridge, path: "../oban-bridge/integrations/elixir"}
  #
  # The four libraries below are the ones it is written against (their public functions are
  # listed in README.md); an app using oban_bridge has them already.
  def project do
    [
      app: :oban_bridge,
      version: @version,
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(),
      deps: deps(),
      description: description(),
      package: package(),
      docs: [main: "readme", extras: ["README.md", "CHANGELOG.md"], source_ref: "v#{@version}"]
    ]
  end

  # No supervision tree: the package only reads `config :oban_bridge` and inserts Oban jobs from
  # the caller's process (and Oban's). Being an application is what makes that config valid.
  def application do
    [extra_applications: [:logger]]
  end

  # `env: :host_compiled` is for a host that cannot fetch the libraries but defines their modules
  # itself and compiles this package's `lib/` among its own sources (oban-bridge's test fixture,
  # `elixir_fixture/mix.exs`: it stands in for Oban and Hephaestus under their genuine names and
  # hex.pm is unreachable where it runs). Mix compiles a dependency before its host, when those
  # modules do not exist yet, so in that mode this project compiles nothing, declares no
  # dependency and only registers the `:oban_bridge` application. Never use it in an app.
  defp host_compiled?, do: Mix.env() == :host_compiled

  defp elixirc_paths, do: if(host_compiled?(), do: [], else: ["lib"])

  defp deps do
    if host_compiled?() do
      []
    else
      [
        {:oban, "~> 2.23"},
        {:hephaestus, "~> 0.3"},
        {:hephaestus_oban, "~> 0.5"},
        {:hephaestus_ecto, "~> 0.3"}
      ]
    end
  end

  defp description do
    "Elixir side of oban-bridge: Hephaestus steps run by Python workers, Elixir steps for " <>
      "Python workflows, declarations of Python-owned workflows, and enqueueing Python jobs " <>
      "through Oban."
  end

  defp package do
    [
      licenses: ["Apache-2.0"],
      links: %{},
      files: ~w(lib mix.exs .formatter.exs README.md CHANGELOG.md)
    ]
  end
end
