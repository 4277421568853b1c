"""Hephaestus's built-in steps under their Elixir module names.

A Python workflow ends at :data:`DONE` (the only valid leaf, as in Hephaestus) and waits with
:data:`WAIT` (a timer; the runner schedules the ``timeout`` resume) or :data:`WAIT_FOR_EVENT`
(an outside ``resume(id, :received)``). Using the same module strings keeps Python-written rows
loadable by an Elixir node, where these modules always exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.workflows.model.definition import (
    DONE_STEP_NAME,
    InvalidOptionError,
    Step,
    StepAsync,
    StepOk,
)
from bridge.workflows.model.instance import Context, Instance

_UNIT_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


def _done(instance: Instance, config: Mapping[str, Any] | None, context: Context) -> StepOk:
    return StepOk("done")


def _wait(instance: Instance, config: Mapping[str, Any] | None, context: Context) -> StepAsync:
    return StepAsync()


DONE = Step(name=DONE_STEP_NAME, events=("done",), run=_done)
WAIT = Step(name="Elixir.Hephaestus.Steps.Wait", events=("timeout",), run=_wait)
WAIT_FOR_EVENT = Step(name="Elixir.Hephaestus.Steps.WaitForEvent", events=("received",), run=_wait)


def wait_delay_ms(config: Mapping[str, Any] | None) -> int:
    """``Wait.delay_ms/1``: ``{"duration": n, "unit": "second"|"minute"|"hour"|"day"}`` in ms.

    The config arrives with string keys and values once it has been through jsonb, which is the
    only form a runner sees.
    """
    if not isinstance(config, Mapping):
        raise InvalidOptionError("Wait needs a config with duration and unit")
    duration = config.get("duration")
    unit = config.get("unit")
    if isinstance(duration, bool) or not isinstance(duration, int) or unit not in _UNIT_MS:
        raise InvalidOptionError(
            f"Wait config must be {{duration: integer, unit: second|minute|hour|day}}, "
            f"got {dict(config)!r}"
        )
    return duration * _UNIT_MS[str(unit)]
