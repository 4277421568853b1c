"""The ExecuteStepWorker's body: a pre-check (is the step still active, without a result?), the
step's own code in a thread, then its result recorded (:mod:`.recording`).

A result holding a context key the workflow's Elixir declaration does not pin is never recorded:
every Elixir node listing instances would crash on the row (HephaestusEcto turns each key into an
existing atom). Retrying cannot declare the key, so the job is discarded at once with the keys,
their paths and the fix in its error, and the instance is failed as on a step's last failing
attempt, the way the delegation host ends a delegated step that breaks its declaration."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from functools import partial
from typing import Any

from bridge.jobs.client.job import Job
from bridge.jobs.client.outcome import Discard, Error
from bridge.workflows.model.builtins import WAIT, wait_delay_ms
from bridge.workflows.model.definition import Workflow, short_name
from bridge.workflows.model.engine import (
    StepResult,
    check_outcome,
    prepare_step,
    step_result,
)
from bridge.workflows.model.instance import Instance
from bridge.workflows.model.serializer import UndeclaredKeyError, undeclared_keys
from bridge.workflows.run.core import (
    found_instance,
    log,
    step_active,
)
from bridge.workflows.run.inline import InlineAdvance, Seen
from bridge.workflows.run.jobs import job_arg
from bridge.workflows.run.recording import Recording
from bridge.workflows.store.batch import (
    AConn,
    load_for_steps,
)
from bridge.workflows.store.coalesce import AsyncCoalescer
from bridge.workflows.store.instances import (
    HAS_RESULT,
    load_instance_and_flag,
)


class ExecuteStepJobs(InlineAdvance, Recording):
    """``HephaestusOban.ExecuteStepWorker``: run an active step's body once and record its
    result, then queue the advance that applies it or, with ``inline_advance``, apply it in the
    same transaction (:mod:`.inline`)."""

    _async_prechecks: AsyncCoalescer[tuple[str, str], tuple[Instance, bool, str | None], AConn]
    _async_recorders: AsyncCoalescer[tuple[Job, StepResult], bool, AConn]

    def perform_execute_step(self, job: Job) -> Any:
        """ExecuteStepWorker: run an active step once and record its result."""
        instance_id = job_arg(job, "instance_id")
        step = job_arg(job, "step_ref")
        instance, ran = self._precheck_one(instance_id, step)
        if not _runnable(instance, step, ran):
            return None
        result = self._execute_body(job, instance, step)
        if isinstance(result, Error | Discard):
            return result
        companions = self._companions(instance, step)
        if self._inline(companions):
            self._apply_one(job, result)
        else:
            self._record_one(job, result, resume=False, companions=companions)
        return None

    async def run_execute_step(self, job: Job) -> Any:
        """:meth:`perform_execute_step` as a coroutine: only the step's own body takes a
        thread (of the runner's, ``step_threads`` at most)."""
        instance_id = job_arg(job, "instance_id")
        step = job_arg(job, "step_ref")
        since = self._inline_applies
        xmin: str | None = None
        if self.coalesce:
            instance, ran, xmin = await self._async_prechecks.submit((instance_id, step))
        else:
            instance, ran = await self._in_thread(self._precheck_one, instance_id, step)
        if not _runnable(instance, step, ran):
            return None
        result = await self._in_thread(self._execute_body, job, instance, step)
        if isinstance(result, Error | Discard):
            return result
        companions = self._companions(instance, step)
        if self._inline(companions):
            if self.coalesce:
                seen = None if xmin is None else Seen(instance, xmin, since)
                await self._async_inline.submit((job, result, seen))
            else:
                await self._in_thread(self._apply_one, job, result)
        elif self.coalesce and companions is None:
            await self._async_recorders.submit((job, result))
        else:
            record = partial(self._record_one, resume=False, companions=companions)
            await self._in_thread(record, job, result)
        return None

    def _inline(self, companions: Any) -> bool:
        """Whether this step job applies its result itself: with ``inline_advance``, unless the
        step is run by Elixir (its companion job must exist exactly when the result does, and
        the delegation door records through the advance job)."""
        return self.inline_advance and companions is None

    def _companions(self, instance: Instance, step: str) -> Any:
        return getattr(self._workflow(instance.workflow).step(step).run, "companion_jobs", None)

    def _execute_body(
        self, job: Job, instance: Instance, step: str
    ) -> StepResult | Error | Discard:
        """Run the step's body; on the job's last attempt a failure fails the workflow first,
        and a result with undeclared keys fails it at once (module docstring)."""
        workflow = self._workflow(instance.workflow)
        try:
            outcome = self._run_body(workflow, instance, step)
        except Exception:
            self._fail_if_exhausted(job, instance.id)
            raise
        result = step_result(step, outcome)
        if result is None:
            self._fail_if_exhausted(job, instance.id)
            return Error(getattr(outcome, "reason", outcome))
        where = f"state.context.steps.{workflow.step(step).context_key}"
        problems = undeclared_keys(workflow, result.context_updates, where)
        if problems:
            refused = UndeclaredKeyError(
                workflow.name, f"the result of {short_name(step)}", problems
            )
            self._fail_refused(job, instance.id, refused)
            return Discard(str(refused))
        return result

    def _precheck_one(self, instance_id: str, step: str) -> tuple[Instance, bool]:
        """The step job's first read: the instance and whether the step has a result."""
        with self._connection() as conn:
            return load_instance_and_flag(
                conn, self.prefix, instance_id, self.workflows, HAS_RESULT, {"step_ref": step}
            )

    async def _precheck_batch(
        self, conn: AConn, items: Sequence[tuple[str, str]]
    ) -> list[tuple[Instance, bool, str | None] | Exception]:
        """:meth:`_precheck_one` for concurrent step jobs in one statement, each instance read
        once however many of its steps ask (a fan-out's siblings), with the row version read
        (for :meth:`_apply_unchanged`); if the statement fails (a connection the server
        closed), each job reads on its own (no version)."""
        try:
            return await self._precheck_many(conn, items)
        except Exception as exc:
            log.info("batch of %d pre-checks failed (%s); one by one", len(items), exc)
        answer: list[tuple[Instance, bool, str | None] | Exception] = []
        for item in items:
            read = await self._outcome_in_thread(self._precheck_one, *item)
            answer.append(read if isinstance(read, Exception) else (*read, None))
        return answer

    async def _precheck_many(
        self, conn: AConn, items: Sequence[tuple[str, str]]
    ) -> list[tuple[Instance, bool, str | None] | Exception]:
        checks = await load_for_steps(
            conn,
            self.prefix,
            [instance_id for instance_id, _ in items],
            [step for _, step in items],
            self.workflows,
        )
        answer: list[tuple[Instance, bool, str | None] | Exception] = []
        for instance_id, step in items:
            check = checks.get(instance_id)
            try:
                instance = found_instance(None if check is None else check.instance, instance_id)
            except Exception as exc:
                answer.append(exc)
                continue
            assert check is not None
            answer.append((instance, step in check.ran, check.xmin))
        return answer

    def _run_body(self, workflow: Workflow, instance: Instance, step: str) -> Any:
        call = prepare_step(workflow, instance, step)
        assert call.step.run is not None
        if call.step.name == WAIT.name:
            wait_delay_ms(call.config)  # a bad config fails the step, not the later advance
        value: Any = call.step.run(call.instance, call.config, call.context)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        return check_outcome(call.step, value)

    def _fail_refused(self, job: Job, instance_id: str, refused: Exception) -> None:
        """A result no retry can make writable: fail the workflow now, the job is discarded."""
        with self._connection() as conn, conn.transaction():
            cancelled = self._fail(conn, instance_id, own_job=job.id or 0)
        log.warning(
            "%s failed: step job %s discarded: %s; cancelled jobs %s",
            instance_id,
            job.id,
            refused,
            cancelled,
        )

    def _fail_if_exhausted(self, job: Job, instance_id: str) -> None:
        """On the last attempt the job is about to be discarded: fail the workflow now."""
        if job.attempt < job.max_attempts:
            return
        with self._connection() as conn, conn.transaction():
            cancelled = self._fail(conn, instance_id, own_job=job.id or 0)
        log.warning(
            "%s failed: step job %s exhausted its attempts; cancelled jobs %s",
            instance_id,
            job.id,
            cancelled,
        )


async def _await(value: Any) -> Any:
    return await value


def _runnable(instance: Instance, step: str, ran: bool) -> bool:
    """Whether a step job should run its body: the step is active in an unfinished instance
    and has no result for this activation yet (processed or not: ``has_result``)."""
    return step_active(instance, step) and not ran
