"""Run every check on a live database, in an order where each can rely on the one before: the
schema first (without it nothing else can be read), then the database itself (clock,
notifications), the nodes and their jobs, the workflows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from bridge import schema
from bridge.doctor import database, nodes, schema_checks, workflows
from bridge.doctor.findings import Report
from bridge.jobs.client.cluster import observe
from bridge.workflows.model.definition import Workflow

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


def examine(
    connect: Connect,
    prefix: str,
    *,
    wait: float = 2.0,
    workflow_defs: Sequence[Workflow] | None = None,
    workflow_modules: Sequence[str] = (),
) -> Report:
    """Every finding on the database ``connect`` opens (autocommit connections), schema
    ``prefix``. ``wait``: seconds to listen for sonar pings and check-ins. ``workflow_defs``:
    the Python workflows the Elixir declarations are generated from (``--workflows``)."""
    report = Report(prefix)
    with connect() as conn:
        try:
            verified = schema.verify(conn, prefix)
            report.add(schema_checks.schema_findings(verified))
            exists, compatible = verified.exists, verified.compatible
        except (
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.ReadOnlySqlTransaction,
        ) as exc:
            exists = schema_checks.has_oban_jobs(conn, prefix)
            report.add(schema_checks.unverifiable(prefix, exc, present=exists))
            compatible = exists
        if not exists:
            return report
        report.facts["migration_versions"] = schema_checks.migration_versions(conn, prefix)

        skew, uncertainty = database.clock_skew(conn)
        report.facts["clock_skew_seconds"] = round(skew, 3)
        report.add(database.skew_findings(skew, uncertainty))
        with connect() as sender:
            heard = database.round_trip(conn, sender, prefix)
        usage = database.queue_usage(conn)
        report.facts["notify_round_trip_seconds"] = None if heard is None else round(heard, 4)
        report.facts["notification_queue_usage"] = usage
        report.add(database.notify_findings(prefix, heard, usage))

        if not compatible:
            return report  # the tables differ: reading jobs and instances may mislead
        cluster = observe(conn, prefix, wait)
        found, facts = nodes.check_nodes(conn, prefix, cluster)
        report.facts.update(facts, waited=wait)
        report.add(found)

        report.add(workflows.stuck_instances(conn, prefix))
        report.add(workflows.orphaned_delegations(conn, prefix))
        report.add(workflows.declarations(conn, prefix, workflow_defs, workflow_modules))
    return report
