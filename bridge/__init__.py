"""oban-bridge: Python as an equal in an Elixir Oban/Hephaestus system, through PostgreSQL."""

__version__ = "0.1.0"
