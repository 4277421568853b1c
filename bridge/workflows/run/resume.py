"""``HephaestusOban.ResumeWorker`` and what queues it: ``resume`` and the durable timer
``schedule_resume``, on the caller's connection."""

from __future__ import annotations

from typing import Any

from bridge.jobs.client.enqueue import insert_all
from bridge.jobs.client.insert_rows import atomic
from bridge.jobs.client.job import Job
from bridge.workflows.model.engine import StepResult
from bridge.workflows.run.jobs import (
    ResumeError,
    job_arg,
    resume_job,
)
from bridge.workflows.run.recording import Recording
from bridge.workflows.store.instances import (
    Conn,
    load_instance,
)


class ResumeJobs(Recording):
    """Resuming a waiting step: queue a ResumeWorker (now, or as a timer) and, as its body,
    record the event as the step's result."""

    def resume(
        self, conn: Conn, instance_id: str, event: str, *, step_ref: str | None = None
    ) -> Job:
        """Queue a ResumeWorker for the step the instance waits on (``current_step``)."""
        instance = load_instance(conn, self.prefix, instance_id, self.workflows)
        workflow = self._workflow(instance.workflow)
        step = step_ref or instance.current_step
        if instance.status != "waiting" or step is None:
            raise ResumeError(f"{instance_id} is {instance.status}, not waiting on a step")
        if event not in workflow.step(step).events:
            raise ResumeError(f"{step} does not declare the event {event!r}")
        job = resume_job(
            workflow, instance, step, event, queue=self.queue, config_key=self.config_key
        )
        with atomic(conn):
            return insert_all(conn, [job], prefix=self.prefix)[0]

    def schedule_resume(self, conn: Conn, instance_id: str, step_ref: str, delay_ms: int) -> Job:
        """A durable timer: a ResumeWorker with event ``timeout`` scheduled ``delay_ms`` ahead.

        The row is ``Runner.schedule_resume/3``'s (same args, meta and tags as a resume); the
        job is the timer, so cancelling it (``bridge jobs cancel``) cancels the timer. Unlike
        upstream, a step that does not declare ``timeout`` is refused here rather than left to
        fail in the advance.
        """
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or delay_ms <= 0:
            raise ResumeError(f"delay_ms must be a positive integer, got {delay_ms!r}")
        instance = load_instance(conn, self.prefix, instance_id, self.workflows)
        workflow = self._workflow(instance.workflow)
        if "timeout" not in workflow.step(step_ref).events:
            raise ResumeError(f"{step_ref} does not declare the event 'timeout'")
        job = self._timer_job(workflow, instance, step_ref, delay_ms)
        with atomic(conn):
            return insert_all(conn, [job], prefix=self.prefix)[0]

    def perform_resume(self, job: Job) -> Any:
        """ResumeWorker: record the resume event (empty context updates) and queue an advance."""
        result = StepResult(job_arg(job, "step_ref"), job_arg(job, "event"), {}, {})
        self._record_one(job, result, resume=True)
        return None

    async def run_resume(self, job: Job) -> Any:
        """:meth:`perform_resume` as a coroutine (in a thread: resumes are rare)."""
        return await self._in_thread(self.perform_resume, job)
