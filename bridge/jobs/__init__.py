"""The Oban-compatible job runtime: jobs, workers, enqueueing, producers, acks, plugins."""
