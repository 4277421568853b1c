"""Python-owned workflows of the cold-VM loading tests (``test_workflows_cold_load.py``).

Two workflows of one shape under names that appear nowhere else in the fixture: ``DECLARED``,
whose Elixir declaration ``bridge workflows export-elixir interop_tests.cold_flows`` generates
(committed as ``elixir_fixture/lib/fixture_workflows/python_declared.ex``), and ``UNDECLARED``,
which no Elixir code names, as an app that skipped the declaration. Every name (modules, events,
context keys at any depth) carries the workflow's suffix, so atoms of one never help the other.

The start step's event picks the path: ``wait`` (an async step: the instance waits), ``flaky``
(a step that raises and is retried later: the instance stays running meanwhile), ``fail`` (a
step that raises on its only attempt: the instance fails) or ``done``.
"""

from __future__ import annotations

from typing import Any

from bridge.workflows import (
    DONE,
    Context,
    Instance,
    RetryConfig,
    Step,
    StepAsync,
    StepOk,
    Unique,
    Workflow,
)

MODES = ("wait", "flaky", "fail", "done")


def _flow(namespace: str, suffix: str) -> Workflow:
    def pick(instance: Instance, config: Any, context: Context) -> StepOk:
        mode = context.initial[f"mode_{suffix}"]
        parcel = {f"weight_{suffix}": 2, f"tags_{suffix}": [{f"label_{suffix}": "fragile"}]}
        return StepOk(f"to_{mode}_{suffix}", {f"parcel_{suffix}": parcel})

    def wait(instance: Instance, config: Any, context: Context) -> StepAsync:
        return StepAsync()

    def boom(instance: Instance, config: Any, context: Context) -> StepOk:
        raise RuntimeError(f"{instance.id}: this step always fails")

    title = suffix.capitalize()
    pick_step = Step(
        name=f"Elixir.{namespace}.Pick{title}",
        events=tuple(f"to_{mode}_{suffix}" for mode in MODES),
        run=pick,
    )
    await_step = Step(
        name=f"Elixir.{namespace}.Await{title}", events=(f"arrived_{suffix}",), run=wait
    )
    flaky = Step(
        name=f"Elixir.{namespace}.Flaky{title}",
        events=(f"recovered_{suffix}",),
        run=boom,
        retry=RetryConfig(max_attempts=2, backoff="constant", max_backoff=60_000),
    )
    fail = Step(
        name=f"Elixir.{namespace}.Boom{title}",
        events=(f"boomed_{suffix}",),
        run=boom,
        retry=RetryConfig(max_attempts=1),
    )
    return Workflow(
        name=f"Elixir.{namespace}.Flow",
        start=pick_step,
        transitions=[
            (pick_step, f"to_wait_{suffix}", await_step),
            (pick_step, f"to_flaky_{suffix}", flaky),
            (pick_step, f"to_fail_{suffix}", fail),
            (pick_step, f"to_done_{suffix}", DONE),
            (await_step, f"arrived_{suffix}", DONE),
            (flaky, f"recovered_{suffix}", DONE),
            (fail, f"boomed_{suffix}", DONE),
        ],
        atoms=[f"{key}_{suffix}" for key in ("mode", "parcel", "weight", "tags", "label")],
    )


def _resumed(namespace: str, suffix: str) -> Workflow:
    """A workflow that waits at its first step, then runs a Python body: what an Elixir caller
    resumes with Hephaestus's own functions (``test_workflows_foreign_resume.py``). Business
    key, version, tags and metadata make the declaration carry them."""

    def ask(instance: Instance, config: Any, context: Context) -> StepAsync:
        return StepAsync()

    def finish(instance: Instance, config: Any, context: Context) -> StepOk:
        answer = {f"by_{suffix}": "python", f"of_{suffix}": instance.id}
        return StepOk(f"finished_{suffix}", {f"answer_{suffix}": answer}, {"finished_by": "py"})

    title = suffix.capitalize()
    ask_step = Step(name=f"Elixir.{namespace}.Ask{title}", events=(f"answered_{suffix}",), run=ask)
    finish_step = Step(
        name=f"Elixir.{namespace}.Finish{title}", events=(f"finished_{suffix}",), run=finish
    )
    return Workflow(
        name=f"Elixir.{namespace}.Flow",
        unique=Unique(key=suffix),
        version=2,
        tags=["python", suffix],
        metadata={"team": "bridge", "limits": {"max": 3}},
        start=ask_step,
        transitions=[
            (ask_step, f"answered_{suffix}", finish_step),
            (finish_step, f"finished_{suffix}", DONE),
        ],
        atoms=[f"{key}_{suffix}" for key in ("answer", "by", "of", "note")],
    )


DECLARED = _flow("ColdPy.Declared", "zq")
UNDECLARED = _flow("ColdPy.Undeclared", "qx")
RESUMED = _resumed("ColdPy.Resumed", "rs")
RESUMED_UNDECLARED = _resumed("ColdPy.ResumedUndeclared", "ru")
# What export-elixir exports; UNDECLARED and RESUMED_UNDECLARED are never declared.
WORKFLOWS = [DECLARED, RESUMED]
