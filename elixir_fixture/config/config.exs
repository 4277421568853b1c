import Config

# oban_bridge configured as a user's app configures it (integrations/elixir/README.md). The app
# mode (`mix run`) reads this; the stdin protocol loads no config and sets the same keys per
# connection (`delegate.configure`, Fixture.DelegateCommands).
config :oban_bridge,
  repo: Fixture.EctoRepo,
  oban: Oban,
  config_key: "golden"
