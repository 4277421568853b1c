"""Stopping a background task whose first cancellation is absorbed inside it."""

from __future__ import annotations

import asyncio

from bridge.jobs.runtime.tasks import cancel_and_wait


async def test_a_task_that_absorbs_a_cancellation_is_still_stopped() -> None:
    absorbed = []

    async def loop() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)  # a query that is cancelled and rolled back
            except asyncio.CancelledError:
                absorbed.append(True)  # as a driver may, it carries on
            await asyncio.sleep(3600)  # then the next interval

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()  # what stop() did: one cancel, then wait for ever
    await asyncio.sleep(0.01)
    assert absorbed == [True] and not task.done()

    await asyncio.wait_for(cancel_and_wait(task), timeout=5)
    assert task.cancelled()


async def test_none_and_finished_tasks_are_fine() -> None:
    await cancel_and_wait(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)

    async def boom() -> None:
        raise RuntimeError("ended badly")

    failed = asyncio.create_task(boom())
    await asyncio.sleep(0)
    await cancel_and_wait(failed)  # a task that died is reported by its own code, not here
