"""Repair until nothing is stuck: passes of :func:`.repair.repair`, each after the instances the
previous pass healed have settled.

One pass is not always enough: the advance a pass enqueues moves the instance on, and the genuine
chain may then lose a later advance of the same instance (HephaestusOban's race strikes wherever
a step's result meets an executing advance). Enqueuing again at once would find nothing (our own
advance is still live), so after a pass that enqueued anything :func:`repair_until_clear` waits
until every instance it healed has *settled* -- finished, or with no job naming it available,
executing or retryable (a scheduled one, a timer, may wait for days) -- and looks again, with the
grace waived for those instances: with none of their jobs running, nothing can be committing a
result for them. It stops when a pass enqueues nothing, after ``max_passes``, or when the healed
instances have not settled within ``settle_timeout`` (no node serving their queue, a very long
chain), and says which.

The lifeline needs none of this: each of its ticks is a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from bridge.jobs.client.unique_insert import PENDING
from bridge.workflows.run.repair import DEFAULT_GRACE, Conn, Repair, repair
from bridge.workflows.run.runner import WorkflowRunner

DEFAULT_MAX_PASSES = 10
DEFAULT_SETTLE_TIMEOUT = 60.0
MOVING_STATES = ("available", "executing", "retryable")

_MOVING = """
SELECT DISTINCT i.id FROM {prefix}.workflow_instances i
JOIN {prefix}.oban_jobs j ON j.args @> jsonb_build_object('instance_id', i.id::text)
WHERE i.id = ANY(%(ids)s) AND i.status NOT IN ('completed', 'failed')
  AND (j.state::text = ANY(%(moving)s) OR (j.state = 'suspended' AND j.meta ? %(pending)s))
"""


@dataclass(frozen=True)
class RepairRun:
    """What :func:`repair_until_clear` did: every pass's repairs, and why it stopped."""

    passes: tuple[tuple[Repair, ...], ...]
    # healed instances still moving when settle_timeout ran out (a later run may find more)
    unsettled: tuple[str, ...] = ()
    # max_passes reached while the last pass still enqueued
    stopped_at_limit: bool = False

    @property
    def repairs(self) -> list[tuple[int, Repair]]:
        """Every repair with its pass number (from 1)."""
        return [(n, r) for n, done in enumerate(self.passes, 1) for r in done]

    @property
    def stuck(self) -> int:
        """Distinct instances found stuck, over all passes."""
        return len({r.instance_id for _, r in self.repairs})

    @property
    def enqueued(self) -> int:
        return sum(1 for _, r in self.repairs if r.action == "enqueued")


def moving(conn: Conn, prefix: str, ids: Collection[str]) -> list[str]:
    """Of ``ids``, the unfinished instances with a job that is running or about to run."""
    params = {"ids": list(ids), "moving": list(MOVING_STATES), "pending": PENDING}
    query = sql.SQL(_MOVING).format(prefix=sql.Identifier(prefix))
    return sorted(row[0] for row in conn.execute(query, params).fetchall())


def repair_until_clear(
    conn: Conn,
    prefix: str,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    runners: Sequence[WorkflowRunner] = (),
    limit: int = 1000,
    max_passes: int = DEFAULT_MAX_PASSES,
    settle_timeout: float = DEFAULT_SETTLE_TIMEOUT,
    poll: float = 0.2,
    sleep: Callable[[float], Any] = time.sleep,
) -> RepairRun:
    """Passes of :func:`repair` until one enqueues nothing (a dry run makes one pass).

    ``conn``: an idle autocommit connection, as :func:`repair` needs.
    """
    if max_passes < 1:
        raise ValueError(f"max_passes must be >= 1, got {max_passes}")
    passes: list[tuple[Repair, ...]] = []
    settled: set[str] = set()
    last = 1 if dry_run else max_passes
    for number in range(1, last + 1):
        done = repair(
            conn,
            prefix,
            grace=grace,
            dry_run=dry_run,
            runners=runners,
            limit=limit,
            settled=settled,
        )
        passes.append(tuple(done))
        healed = [r.instance_id for r in done if r.action == "enqueued"]
        if not healed:
            return RepairRun(tuple(passes))
        if number == last:
            break
        still = _wait_settled(conn, prefix, healed, settle_timeout, poll, sleep)
        if still:
            return RepairRun(tuple(passes), unsettled=tuple(still))
        settled.update(healed)
    return RepairRun(tuple(passes), stopped_at_limit=not dry_run)


def _wait_settled(
    conn: Conn,
    prefix: str,
    ids: Collection[str],
    timeout: float,
    poll: float,
    sleep: Callable[[float], Any],
) -> list[str]:
    """Poll until none of ``ids`` is moving; returns those still moving at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        still = moving(conn, prefix, ids)
        if not still or time.monotonic() >= deadline:
            return still
        sleep(poll)


__all__ = [
    "DEFAULT_MAX_PASSES",
    "DEFAULT_SETTLE_TIMEOUT",
    "RepairRun",
    "moving",
    "repair_until_clear",
]
