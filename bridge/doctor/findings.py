"""What ``bridge doctor`` reports: findings, each with its fix, and what they add up to. Pure.

A finding names one interop hazard in words an operator can act on: ``what`` is wrong and the
``fix``. Its severity says how much it matters, and the exit status follows from the worst one,
so a CI job or a health check can run the command and test ``$?``:

- ``error``: work is lost, stuck or will fail now (a job no node takes, an instance that waits
  for ever, a schema bridge cannot use);
- ``warning``: a hazard that will bite under some interleaving or configuration (a queue
  served by both languages, a clock off by seconds, a node that may be dead);
- ``note``: what doctor could not tell, and how to let it (no check-ins heard), or a harmless
  difference. Notes never change the exit status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "note"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "note")

# Exit statuses (the values of bridge.cli.output's constants: this layer must not import the
# CLI, and the CLI test checks they agree).
EXIT_CLEAN = 0
EXIT_HAZARD = 1  # EXIT_FAILED: a check said no
EXIT_SCHEMA = 5  # the shared schema is missing or differs from what bridge needs

# Control characters a row may hold (a worker or node name) are shown escaped: one line each.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


@dataclass(frozen=True)
class Finding:
    """One hazard: its ``check`` (the family that found it), ``what`` is wrong, the ``fix``.

    ``details`` carries the facts behind it for ``--json`` (ids, counts, names)."""

    check: str
    severity: Severity
    what: str
    fix: str
    details: dict[str, Any] = field(default_factory=dict)
    # A blocking schema difference: the exit status is EXIT_SCHEMA, as for `bridge worker`.
    schema_blocking: bool = False

    def line(self) -> str:
        """``error: <what>; fix: <fix>``, one line whatever the names hold."""
        return f"{self.severity}: {self.what}; fix: {self.fix}".translate(_CONTROL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "what": self.what,
            "fix": self.fix,
            "details": self.details,
        }


@dataclass
class Report:
    """Every finding, in the order the checks ran, and the facts doctor read on the way (the
    Oban migration version, the clock skew, the nodes heard) for ``--json``."""

    prefix: str
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, found: Iterable[Finding]) -> None:
        self.findings.extend(found)

    def counts(self) -> dict[Severity, int]:
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    @property
    def exit_status(self) -> int:
        return exit_status(self.findings)

    def summary(self) -> str:
        return summary(self.prefix, self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "findings": [f.to_dict() for f in self.findings],
            "counts": self.counts(),
            "facts": self.facts,
            "exit_status": self.exit_status,
        }


def exit_status(findings: Sequence[Finding]) -> int:
    """5 when the schema is missing or differs in a way bridge cannot work with (as every
    command that needs it), else 1 when any error or warning was found, else 0 (notes only)."""
    if any(f.schema_blocking for f in findings):
        return EXIT_SCHEMA
    if any(f.severity in ("error", "warning") for f in findings):
        return EXIT_HAZARD
    return EXIT_CLEAN


def summary(prefix: str, findings: Sequence[Finding]) -> str:
    """The last line: ``doctor: "public": no hazard found`` or the counts by severity."""
    import json

    shown = json.dumps(prefix, ensure_ascii=False).translate(_CONTROL)
    counts = [
        f"{n} {s}{'' if n == 1 else 's'}"
        for s in SEVERITIES
        if (n := sum(1 for f in findings if f.severity == s))
    ]
    if not any(f.severity != "note" for f in findings):
        tail = f" ({', '.join(counts)})" if counts else ""
        return f"doctor: schema {shown}: no hazard found{tail}"
    return f"doctor: schema {shown}: {', '.join(counts)}"
