"""The workflow lifeline: a node plugin that runs :func:`bridge.workflows.run.repair.repair`.

Opt-in, like the job lifeline: the upstream defect it heals leaves instances stuck without any
error, so only a periodic look finds them. Only the leader looks; every insert is also safe
against a second repairer (instance lock or unique-insert protocol), so a CLI ``repair`` run at
the same moment cannot double an advance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bridge.db import connect
from bridge.jobs.plugins import Plugin
from bridge.workflows.run.repair import DEFAULT_GRACE, Repair, describe, repair
from bridge.workflows.run.runner import WorkflowRunner

log = logging.getLogger("bridge.workflows.lifeline")


class WorkflowLifeline(Plugin):
    name = "workflow_lifeline"
    leader_only = True

    def __init__(
        self,
        grace: float = DEFAULT_GRACE,
        interval: float = 30.0,
        runners: Sequence[WorkflowRunner] = (),
    ) -> None:
        super().__init__(interval)
        self.grace = grace
        self.runners = list(runners)

    async def tick(self) -> list[Repair]:
        node = self.node
        assert node is not None
        if not node.is_leader():
            return []
        done = await asyncio.to_thread(self._repair, node.config.url, node.prefix)
        for line in describe(done):
            log.warning("workflow lifeline: %s", line)
        for r in done:
            if r.action == "enqueued" and r.queue is not None:
                node.wake(r.queue)
        return done

    def _repair(self, url: str, prefix: str) -> list[Repair]:
        with connect(url, autocommit=True) as conn:
            return repair(conn, prefix, grace=self.grace, runners=self.runners)
