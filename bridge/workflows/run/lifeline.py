"""The workflow lifeline: a node plugin that runs :func:`bridge.workflows.run.repair.repair`.

Opt-in, like the job lifeline: the upstream defects it heals (a lost advance, a failed step that
never failed its instance) leave instances stuck without any error, so only a periodic look finds
them. Only the leader looks; every insert is also safe against a second repairer (instance lock
or unique-insert protocol), so a CLI ``repair`` run at the same moment cannot double an advance.

Each tick is one pass, so a chain that loses a second advance after being healed is healed again
by a later tick. The instances a tick healed are remembered: once none of their jobs is moving,
the next tick looks at them without the grace (nothing can be committing a result for them), so
a second loss is healed one interval after the instance settles rather than grace + interval.

A failed step is seen through its discarded job, which a Pruner deletes after ``max_age``; on a
node whose own Pruner would delete it before the lifeline's grace + interval, the lifeline says
so once at start (the instance would then only be reported: :mod:`.repair`, the pruned shape).
An Elixir node's Pruner is out of sight: the docs ask for the same there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bridge.db import connect
from bridge.jobs.plugins import NodeView, Plugin
from bridge.jobs.plugins.pruner import Pruner
from bridge.workflows.run.repair import DEFAULT_GRACE, Repair, describe, repair
from bridge.workflows.run.repair_passes import moving
from bridge.workflows.run.runner import WorkflowRunner

log = logging.getLogger("bridge.workflows.lifeline")

# At most this many healed instances are remembered between ticks (the oldest are forgotten:
# they are then looked at with the grace again, as any instance).
REMEMBERED = 10_000


def default_interval(grace: float) -> float:
    """A tenth of the grace, between 1 and 30 seconds: a stuck instance is healed at most
    10 % after its grace (30 s, the interval this lifeline always had, for long graces), and the
    leader runs the stuck-instance query at most once a second."""
    return min(30.0, max(1.0, grace / 10))


class WorkflowLifeline(Plugin):
    name = "workflow_lifeline"
    leader_only = True

    def __init__(
        self,
        grace: float = DEFAULT_GRACE,
        interval: float | None = None,
        runners: Sequence[WorkflowRunner] = (),
    ) -> None:
        super().__init__(default_interval(grace) if interval is None else interval)
        self.grace = grace
        self.runners = list(runners)
        self._healed: list[str] = []  # instances enqueued for, still moving at the last look

    def start(self, node: NodeView) -> None:
        super().start(node)
        for message in pruner_conflicts(node.plugins, self.grace, self.interval):
            log.warning("workflow lifeline: %s", message)

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
            still = set(moving(conn, prefix, self._healed)) if self._healed else set()
            settled = [i for i in self._healed if i not in still]
            done = repair(conn, prefix, grace=self.grace, runners=self.runners, settled=settled)
        enqueued = [r.instance_id for r in done if r.action == "enqueued"]
        kept = [i for i in self._healed if i in still and i not in enqueued]
        self._healed = (kept + enqueued)[-REMEMBERED:]
        return done


def pruner_conflicts(plugins: Sequence[Plugin], grace: float, interval: float) -> list[str]:
    """One line for each Pruner among ``plugins`` that deletes a discarded job before a lifeline
    with this grace and interval is sure to have seen it (within grace + interval)."""
    window = grace + interval
    return [
        f"the pruner deletes discarded jobs after {p.max_age:g} s, not more than the lifeline's "
        f"grace + interval ({window:g} s): a failed step's discarded job may be pruned before "
        "the lifeline sees it, leaving its instance running (then reported, never healed); "
        f"prune after more than {window:g} s (--prune-after)"
        for p in plugins
        if isinstance(p, Pruner) and p.max_age <= window
    ]
