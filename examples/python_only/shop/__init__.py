"""A small shop's background work, all in Python, on oban-bridge's embedded PostgreSQL."""
