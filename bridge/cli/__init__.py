"""The ``bridge`` command line: one module per command group, all over one shared context
(``context``) and one error/output layer (``output``).

The database is resolved lazily, only by commands that need one, so ``bridge schema show`` and
``--help`` never start an embedded server.
"""

from __future__ import annotations

from bridge.cli.demo import demo
from bridge.cli.doctor import doctor_command
from bridge.cli.embedded import embedded_group
from bridge.cli.enqueue import enqueue_command
from bridge.cli.export_elixir import export_elixir_command
from bridge.cli.jobs import jobs_group
from bridge.cli.nodes import nodes_command
from bridge.cli.queues import queues_group
from bridge.cli.root import main
from bridge.cli.schema import schema_group
from bridge.cli.worker import worker_command
from bridge.cli.workflow_graph import graph_command
from bridge.cli.workflows import workflows_group

for _command in (
    schema_group,
    demo,
    worker_command,
    enqueue_command,
    jobs_group,
    queues_group,
    workflows_group,
    nodes_command,
    doctor_command,
    embedded_group,
):
    main.add_command(_command)

workflows_group.add_command(export_elixir_command)
workflows_group.add_command(graph_command)

__all__ = ["main"]
