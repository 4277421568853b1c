"""The rows of HephaestusOban's three job kinds, as the runner writes them: worker names, args,
meta, tags and max_attempts exactly as HephaestusOban 0.5.0 builds them (pure), and the
runner's errors. Repair and the delegation door build the same jobs from here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bridge.jobs.client.job import Job
from bridge.workflows.model.definition import (
    Workflow,
    WorkflowError,
)
from bridge.workflows.model.instance import Instance

ADVANCE_WORKER = "HephaestusOban.AdvanceWorker"
EXECUTE_STEP_WORKER = "HephaestusOban.ExecuteStepWorker"
RESUME_WORKER = "HephaestusOban.ResumeWorker"
WORKERS = (ADVANCE_WORKER, EXECUTE_STEP_WORKER, RESUME_WORKER)
ADVANCE_MAX_ATTEMPTS = 20
RESUME_MAX_ATTEMPTS = 3
DEFAULT_QUEUE = "bridge_workflows"
DEFAULT_CONFIG_KEY = "bridge"


class RunnerError(WorkflowError):
    """Base class of the runner's errors."""


class ResumeError(RunnerError):
    """A resume that cannot apply: the instance is not waiting on a step, or the event is not
    one that step declares."""


class JobArgsError(RunnerError):
    """A workflow job whose args lack a field or name something this runner does not run."""


def job_meta(
    workflow: Workflow,
    instance_id: str,
    *,
    step_ref: str | None = None,
    runtime_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``JobMetadata.build``: workflow metadata < runtime metadata < the system keys."""
    meta: dict[str, Any] = {**workflow.metadata, **(runtime_metadata or {})}
    meta.update(
        heph_workflow=workflow.short_name,
        instance_id=instance_id,
        workflow_version=workflow.version,
    )
    if step_ref is not None:
        meta["step"] = workflow.step(step_ref).short_name
    return meta


def job_tags(workflow: Workflow) -> list[str]:
    return list(dict.fromkeys([workflow.short_name, *workflow.tags]))


def advance_job(
    workflow: Workflow,
    instance: Instance,
    *,
    queue: str,
    config_key: str,
    step_ref: str | None = None,
) -> Job:
    args = {
        "instance_id": instance.id,
        "config_key": config_key,
        "workflow": workflow.name,
        "workflow_version": instance.workflow_version,
    }
    return Job.new(
        ADVANCE_WORKER,
        args,
        queue=queue,
        max_attempts=ADVANCE_MAX_ATTEMPTS,
        meta=job_meta(workflow, instance.id, step_ref=step_ref),
        tags=job_tags(workflow),
    )


def execute_step_job(
    workflow: Workflow, instance: Instance, step_ref: str, *, queue: str, config_key: str
) -> Job:
    args = {
        "instance_id": instance.id,
        "config_key": config_key,
        "step_ref": step_ref,
        "workflow": workflow.name,
        "workflow_version": instance.workflow_version,
    }
    meta = job_meta(
        workflow, instance.id, step_ref=step_ref, runtime_metadata=instance.runtime_metadata
    )
    return Job.new(
        EXECUTE_STEP_WORKER,
        args,
        queue=queue,
        max_attempts=workflow.retry_for(step_ref).max_attempts,
        meta=meta,
        tags=job_tags(workflow),
    )


def resume_job(
    workflow: Workflow,
    instance: Instance,
    step_ref: str,
    event: str,
    *,
    queue: str,
    config_key: str,
    schedule_in: timedelta | None = None,
) -> Job:
    args = {
        "instance_id": instance.id,
        "step_ref": step_ref,
        "event": event,
        "config_key": config_key,
        "workflow": workflow.name,
        "workflow_version": instance.workflow_version,
    }
    return Job.new(
        RESUME_WORKER,
        args,
        queue=queue,
        max_attempts=RESUME_MAX_ATTEMPTS,
        meta=job_meta(workflow, instance.id, step_ref=step_ref),
        tags=job_tags(workflow),
        schedule_in=schedule_in,
    )


def job_arg(job: Job, key: str) -> Any:
    """A workflow job's arg, checked: a non-empty string, or the integer ``workflow_version``
    (1 when absent, as HephaestusOban reads it)."""
    value = job.args.get(key)
    if key == "workflow_version":
        if value is None:
            return 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobArgsError(f"job {job.id}: workflow_version must be an integer: {value!r}")
        return value
    if not isinstance(value, str) or not value:
        raise JobArgsError(f"job {job.id}: args.{key} must be a non-empty string: {value!r}")
    return value
