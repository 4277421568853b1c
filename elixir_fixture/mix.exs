defmodule Fixture.MixProject do
  @moduledoc false
  use Mix.Project

  # No hex dependencies on purpose: hex.pm is unreachable where this runs. jiffy (JSON) comes from
  # Debian's erlang-jiffy, which sits on the VM's default code path.
  def project do
    [
      app: :elixir_fixture,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [],
      # The Elixir modules oban-bridge ships for users' apps are compiled into the fixture too,
      # so the interop tests exercise exactly the code users copy.
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
