import Config

# The schema the app mode connects to (Fixture.Application reads OBAN_PREFIX too).
config :oban_bridge, prefix: System.get_env("OBAN_PREFIX", "public")
