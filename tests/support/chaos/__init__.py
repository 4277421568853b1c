"""The chaos run: ``bridge worker`` processes killed, frozen and cut off from a database of
their own while they run jobs and workflows, then every row checked against what the bodies
recorded. ``run.run_chaos`` is the entry point; ``tests/chaos`` and ``benchmarks/chaos.py``
call it."""
