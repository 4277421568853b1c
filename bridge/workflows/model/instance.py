"""The workflow instance, as ``Hephaestus.Core.Instance`` holds it.

Values are immutable, as in Elixir: the engine returns new instances instead of changing them,
so an instance read from the database can be compared with the one about to be written. Step
references are module strings (``"Elixir.MyApp.Steps.Charge"``), the form they take in the
database; the workflow definition resolves them.

Row timestamps (``inserted_at``/``updated_at``) are not part of the Elixir struct either; the
serializer handles them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

Status: TypeAlias = Literal["pending", "running", "waiting", "completed", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "running", "waiting", "completed", "failed")


def _empty() -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class Context:
    """``initial`` is the start data; ``steps`` maps each step's context key to its updates."""

    initial: Mapping[str, Any] = field(default_factory=_empty)
    steps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def put_step_result(self, key: str, result: Mapping[str, Any]) -> Context:
        """``Context.put_step_result/3``: the step's entry is replaced, not merged."""
        return Context(self.initial, {**self.steps, key: result})


@dataclass(frozen=True)
class ExecutionEntry:
    """``Hephaestus.Core.ExecutionEntry``.

    No Hephaestus 0.3.1 code path appends entries (every golden row has
    ``"execution_history": []``), but rows may carry them, so they load and re-serialise
    unchanged: ``precision`` keeps the number of fractional digits ``DateTime`` had.
    """

    step_ref: str
    event: str
    timestamp: datetime
    context_updates: Mapping[str, Any] | None = None
    precision: int = 6


@dataclass(frozen=True)
class Instance:
    """A workflow run. ``workflow``/``current_step``/step sets hold module strings."""

    id: str
    workflow: str
    workflow_version: int = 1
    status: Status = "pending"
    current_step: str | None = None
    context: Context = field(default_factory=Context)
    step_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    active_steps: frozenset[str] = frozenset()
    completed_steps: frozenset[str] = frozenset()
    runtime_metadata: Mapping[str, Any] = field(default_factory=_empty)
    execution_history: tuple[ExecutionEntry, ...] = ()
