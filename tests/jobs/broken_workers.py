"""A worker module that fails on import, as a typo or a missing dependency would."""

from bridge import Job, worker


@worker(name="broken.Never", queue="faults")
def never(job: Job) -> None:
    return None


raise ImportError("No module named 'a_missing_dependency'")
