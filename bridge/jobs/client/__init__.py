"""The client side of jobs: what any program (a web request, a script, a worker body) uses to
build, insert, inspect and control jobs. No node is needed; nothing here runs jobs."""
