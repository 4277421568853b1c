"""``bridge doctor``'s checks: every interop hazard a live shared database shows, each named
with its fix.

One module per hazard family, pure where the facts allow: ``schema_checks`` (``schema.verify``
and the migration versions), ``database`` (clock skew, the NOTIFY round trip), ``nodes`` (the
languages of the live nodes, queues both serve, jobs no node takes, jobs left executing by a dead
node), ``workflows`` (stuck instances, orphaned delegated jobs, undeclared Python-owned
workflows); ``findings`` holds what they return and the exit status it adds up to;
``examine`` runs them all. Everything here only reads (the round trip sends one NOTIFY on a
channel no node listens to).
"""

from __future__ import annotations

from bridge.doctor.examine import examine
from bridge.doctor.findings import Finding, Report, exit_status

__all__ = ["Finding", "Report", "examine", "exit_status"]
