defmodule Fixture.MixProject do
  @moduledoc false
  use Mix.Project

  # No hex dependencies on purpose: hex.pm is unreachable where this runs. jiffy (JSON) comes from
  # Debian's erlang-jiffy, which sits on the VM's default code path.
  #
  # oban_bridge (integrations/elixir) is a dependency, as in a user's app, so `config
  # :oban_bridge` is an application's config. Its sources are compiled here, among the fixture's:
  # it is written against Oban and Hephaestus, which this project defines itself (lib/oban,
  # lib/hephaestus*), and Mix compiles a dependency before its host. `env: :host_compiled` is the
  # package's mode for exactly that: it compiles nothing and declares no dependency of its own
  # (integrations/elixir/mix.exs), so nothing is fetched.
  def project do
    [
      app: :elixir_fixture,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [{:oban_bridge, path: "../integrations/elixir", env: :host_compiled}],
      elixirc_paths: ["lib", Path.expand("../integrations/elixir/lib", __DIR__)],
      xref: [exclude: [:jiffy]]
    ]
  end

  # `mod` is the app mode (`mix run --no-halt`, see Fixture.Application); the stdin protocol
  # (`elixir -e 'Fixture.CLI.main()'`) only loads the application and never starts it.
  def application do
    [extra_applications: [:logger, :crypto], mod: {Fixture.Application, []}]
  end
end
