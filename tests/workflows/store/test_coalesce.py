"""Unit tests of ``bridge.workflows.store.coalesce.AsyncCoalescer``: the runner's group commit.

The runner's correctness rests on promises of the coalescer that the database tests only
exercise by accident: every caller gets exactly its own outcome (a value, its own exception
instance, or the batch's exception for every item of a failed batch); no caller is ever left
waiting (one drain per loop that ends after ``linger`` of quiet, with a submit racing that exit
starting a new one); the connection is opened once for consecutive batches, closed when a batch
fails, after ``linger``, or when the drain is cancelled, and never shared across event loops. A
slip in any of these is a job that silently gets another job's result, a worker that hangs for
ever, or a leaked or broken connection reused, under concurrency the database tests rarely
reach. So these tests drive the coalescer with plain coroutine batch functions and stand-in
resources, no database, with timeouts everywhere so that a bug fails a test instead of hanging
it.

Some tests look at ``AsyncCoalescer._queues`` to find the drain task of the running loop (to
cancel it, or to wait for it to end); that is the only way to make those cases deterministic.
The last tests pinned down three bugs found while writing them (a drain cancelled before it
ran, one cancelled while closing a failed batch's connection, a non-Exception from the batch
function); they were fixed in ``coalesce.py`` and the tests stay as its regression tests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from bridge.workflows.store.coalesce import AsyncCoalescer

A = TypeVar("A")

TIMEOUT = 2.0  # seconds; every wait in these tests is bounded by this
LINGER = 0.05  # the coalescers' default linger here: short, so that drains end within a test
HOLD = -1  # the item whose batch a Recorder holds until released

Outcome = int | BaseException  # what a batch fn returns for one item
Fn = Callable[[Sequence[int]], Sequence[Outcome]]


class Resource:
    """A stand-in for the drain's connection, numbered in the order the resources were opened."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Resource({self.n})"


Coalescer = AsyncCoalescer[int, int, Resource]
BatchFn = Callable[[Resource, Sequence[int]], Awaitable[Sequence[Outcome]]]


@dataclass(frozen=True)
class Raised:
    """What a caller got when its submit raised (so a *returned* exception cannot pass for it)."""

    exc: BaseException


Got = int | Raised  # what a caller got


def double(items: Sequence[int]) -> list[Outcome]:
    return [i * 2 for i in items]


class Recorder:
    """The batch fn, ``open`` and ``close`` of a coalescer, recording what they were asked.

    ``log`` has one line per call in order (``open 1``, ``batch 1 [0, 1]``, ``close 1``). The
    batch holding ``HOLD`` sets ``entered`` and waits for ``release`` (at most ``TIMEOUT``, so
    that a broken test cannot hang the run); ``cancelled`` counts the batches cancelled while
    they ran. ``close`` sets ``closing``, then waits for ``close_gate`` if there is one.
    """

    def __init__(self, fn: Fn = double, *, delay: float = 0.0) -> None:
        self.fn = fn
        self.delay = delay
        self.calls: list[list[int]] = []
        self.used: list[int] = []  # the resource number each batch got
        self.opened: list[int] = []
        self.closed: list[int] = []
        self.log: list[str] = []
        self.cancelled = 0
        self.open_errors: list[Exception] = []  # raised by the next opens, one each
        self.close_error: Exception | None = None
        self.close_delay = 0.0
        self.close_gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.closing = asyncio.Event()

    async def batch(self, resource: Resource, items: Sequence[int]) -> Sequence[Outcome]:
        self.calls.append(list(items))
        self.used.append(resource.n)
        self.log.append(f"batch {resource.n} {list(items)}")
        try:
            if HOLD in items:
                self.entered.set()
                await asyncio.wait_for(self.release.wait(), TIMEOUT)
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self.fn(items)

    async def open(self) -> Resource:
        if self.open_errors:
            self.log.append("open failed")
            raise self.open_errors.pop(0)
        resource = Resource(len(self.opened) + 1)
        self.opened.append(resource.n)
        self.log.append(f"open {resource.n}")
        return resource

    async def close(self, resource: Resource) -> None:
        self.closed.append(resource.n)
        self.log.append(f"close {resource.n}")
        self.closing.set()
        if self.close_gate is not None:
            await asyncio.wait_for(self.close_gate.wait(), TIMEOUT)
        if self.close_delay:
            await asyncio.sleep(self.close_delay)
        if self.close_error is not None:
            raise self.close_error

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.calls]


def make(
    recorder: Recorder,
    *,
    batch: BatchFn | None = None,
    max_batch: int = 100,
    linger: float = LINGER,
) -> Coalescer:
    return AsyncCoalescer(
        batch or recorder.batch,
        open=recorder.open,
        close=recorder.close,
        max_batch=max_batch,
        linger=linger,
        name="test-coalesce",
    )


def drains(coalescer: Coalescer) -> set[asyncio.Task[None]]:
    """The drain tasks the coalescer has registered for the running loop."""
    queue = coalescer._queues.get(asyncio.get_running_loop())
    return set() if queue is None else set(queue.tasks)


async def within(awaitable: Awaitable[A]) -> A:
    return await asyncio.wait_for(awaitable, TIMEOUT)


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await within(poll())


async def ended(tasks: set[asyncio.Task[None]]) -> None:
    """Wait (bounded) for these tasks to finish, without cancelling them."""
    if tasks:
        await within(asyncio.wait(tasks))


async def stop(coalescer: Coalescer) -> None:
    """Cancel the running loop's drains (closing their resources) instead of awaiting linger."""
    tasks = drains(coalescer)
    for task in tasks:
        task.cancel()
    await ended(tasks)


async def got(submit: Awaitable[int]) -> Got:
    try:
        return await submit
    except Exception as exc:
        return Raised(exc)


async def gather_outcomes(coalescer: Coalescer, items: Sequence[int] | range) -> list[Got]:
    return await within(asyncio.gather(*(got(coalescer.submit(i)) for i in items)))


class Kit:
    """Makes coalescers for a test on pytest's loop; at the end waits for their drains to end
    (after ``linger``) and checks that every resource opened was closed exactly once."""

    def __init__(self) -> None:
        self.made: list[tuple[Coalescer, Recorder]] = []

    def new(
        self,
        fn: Fn = double,
        *,
        batch: Callable[[Recorder], BatchFn] | None = None,
        max_batch: int = 100,
        linger: float = LINGER,
        delay: float = 0.0,
    ) -> tuple[Coalescer, Recorder]:
        recorder = Recorder(fn, delay=delay)
        coalescer = make(
            recorder,
            batch=batch(recorder) if batch else None,
            max_batch=max_batch,
            linger=linger,
        )
        self.made.append((coalescer, recorder))
        return coalescer, recorder

    async def finish(self) -> None:
        for coalescer, recorder in self.made:
            tasks = drains(coalescer)
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=TIMEOUT)
                for task in pending:
                    task.cancel()
                assert not pending, "a drain did not end after its linger"
            leaked_or_twice = "a resource leaked or was closed twice"
            assert sorted(recorder.closed) == recorder.opened, leaked_or_twice


@pytest.fixture
async def kit() -> AsyncIterator[Kit]:
    made = Kit()
    yield made
    await made.finish()


# --- results ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_batch", "sizes"), [(100, [50]), (8, [8, 8, 8, 8, 8, 8, 2])])
async def test_fifty_concurrent_submitters_each_get_their_own_result(
    kit: Kit, max_batch: int, sizes: list[int]
) -> None:
    coalescer, recorder = kit.new(max_batch=max_batch)
    assert await gather_outcomes(coalescer, range(50)) == [i * 2 for i in range(50)]
    # All queued before the drain's first step: coalesced, max_batch at a time, in arrival order.
    assert recorder.sizes == sizes
    assert [i for call in recorder.calls for i in call] == list(range(50))
    assert recorder.opened == [1] and recorder.used == [1] * len(sizes)


async def test_a_lone_submit_is_a_batch_of_one(kit: Kit) -> None:
    coalescer, recorder = kit.new()
    for item in (3, 4, 5):
        assert await within(coalescer.submit(item)) == item * 2
    assert recorder.calls == [[3], [4], [5]]
    assert (coalescer.batches, coalescer.items) == (3, 3)


async def test_a_caller_submitting_again_right_after_its_result_is_served(kit: Kit) -> None:
    """The settled caller's wake-up and its next submit run while the drain waits for more:
    that submit must wake the idle drain at once (not when its ``linger`` runs out), and never
    queue behind a drain that is gone."""
    coalescer, recorder = kit.new(linger=1.0)

    async def chain(base: int) -> list[int]:  # awaits directly: no hop between submits
        return [await coalescer.submit(base + n) for n in range(10)]

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await within(chain(0)) == [n * 2 for n in range(10)]
    chains = await within(asyncio.gather(*(chain(100 * c) for c in range(1, 5))))
    assert chains == [[(100 * c + n) * 2 for n in range(10)] for c in range(1, 5)]
    assert loop.time() - started < 0.5, "a submit to the idle drain waited for its linger"
    assert coalescer.items == 50
    assert recorder.opened == [1]  # one drain served them all
    await stop(coalescer)


async def test_items_submitted_while_a_batch_runs_go_into_the_next_batch(kit: Kit) -> None:
    coalescer, recorder = kit.new()
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0.02)
    assert recorder.calls == [[HOLD]]  # not a batch of their own alongside the held one
    assert not first.done() and not any(t.done() for t in later)
    recorder.release.set()
    assert await within(first) == HOLD * 2
    assert await within(asyncio.gather(*later)) == [2, 4, 6]
    assert recorder.calls == [[HOLD], [1, 2, 3]]
    assert (coalescer.batches, coalescer.items) == (2, 4)


async def test_items_queued_behind_a_batch_are_taken_max_batch_at_a_time(kit: Kit) -> None:
    coalescer, recorder = kit.new(max_batch=3)
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    queued = asyncio.ensure_future(gather_outcomes(coalescer, range(7)))
    await asyncio.sleep(0.01)
    recorder.release.set()
    assert await within(first) == HOLD * 2
    assert await within(queued) == [i * 2 for i in range(7)]
    assert recorder.calls == [[HOLD], [0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_below_one_is_refused(max_batch: int) -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        make(Recorder(), max_batch=max_batch)


# --- failures -----------------------------------------------------------------------------------


async def test_an_exception_outcome_is_raised_only_in_its_own_caller(kit: Kit) -> None:
    errors = {i: ValueError(f"bad {i}") for i in (0, 4, 9)}

    def fn(items: Sequence[int]) -> list[Outcome]:
        return [errors.get(i, i * 2) for i in items]

    coalescer, recorder = kit.new(fn)
    outcomes = await gather_outcomes(coalescer, range(10))
    assert recorder.sizes == [10]  # one batch: the errors were sorted out per item
    for i, outcome in enumerate(outcomes):
        if i in errors:
            assert outcome == Raised(errors[i])  # that very instance, raised
        else:
            assert outcome == i * 2
    assert recorder.closed == [] and recorder.used == [1]  # not a batch failure: resource kept
    assert await within(coalescer.submit(20)) == 40
    assert recorder.used == [1, 1]


async def test_a_raising_batch_fn_fails_only_its_batch_and_the_next_gets_a_fresh_resource(
    kit: Kit,
) -> None:
    boom = RuntimeError("batch failed")

    def fn(items: Sequence[int]) -> list[Outcome]:
        if 5 in items:
            raise boom
        return double(items)

    coalescer, recorder = kit.new(fn, max_batch=4)
    outcomes = await gather_outcomes(coalescer, range(12))
    assert outcomes[:4] == [0, 2, 4, 6]
    assert outcomes[4:8] == [Raised(boom)] * 4
    assert outcomes[8:] == [16, 18, 20, 22]
    assert recorder.log == [
        "open 1",
        "batch 1 [0, 1, 2, 3]",
        "batch 1 [4, 5, 6, 7]",
        "close 1",  # at once: it may be broken
        "open 2",
        "batch 2 [8, 9, 10, 11]",
    ]
    assert (coalescer.batches, coalescer.items) == (3, 12)


async def test_a_close_that_raises_is_ignored_and_the_batch_keeps_its_own_error(kit: Kit) -> None:
    boom = RuntimeError("batch failed")

    def fn(items: Sequence[int]) -> list[Outcome]:
        if 1 in items:
            raise boom
        return double(items)

    coalescer, recorder = kit.new(fn)
    recorder.close_error = OSError("close failed")
    assert await within(got(coalescer.submit(1))) == Raised(boom)
    assert await within(coalescer.submit(2)) == 4  # the drain survived the failed close
    assert recorder.used == [1, 2] and recorder.closed == [1]


async def test_a_failing_open_fails_its_batch_and_the_next_batch_opens_again(kit: Kit) -> None:
    coalescer, recorder = kit.new()
    refused = ConnectionError("refused")
    recorder.open_errors = [refused]
    assert await gather_outcomes(coalescer, range(3)) == [Raised(refused)] * 3
    assert recorder.calls == []  # the batch fn never ran without a resource
    assert await within(coalescer.submit(4)) == 8
    assert recorder.log == ["open failed", "open 1", "batch 1 [4]"]
    assert recorder.closed == []  # nothing was opened for the failed batch: nothing to close


@pytest.mark.parametrize("extra", [-1, 1], ids=["too-few", "too-many"])
async def test_a_wrong_number_of_outcomes_is_an_error_for_its_items(kit: Kit, extra: int) -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        outcomes = double(items)
        if 0 not in items:
            return outcomes
        return outcomes[:extra] if extra < 0 else [*outcomes, 0]

    coalescer, recorder = kit.new(fn)
    for outcome in await gather_outcomes(coalescer, range(3)):
        assert isinstance(outcome, Raised) and isinstance(outcome.exc, RuntimeError)
        assert f"returned {3 + extra} outcomes for 3 items" in str(outcome.exc)
    assert recorder.closed == [1]  # a failed batch: its resource is not trusted again
    assert await within(coalescer.submit(5)) == 10
    assert recorder.used == [1, 2]


async def test_a_batch_fn_raising_cancelled_error_fails_only_its_batch(kit: Kit) -> None:
    """A CancelledError out of the batch fn (it awaited something that was cancelled) is that
    batch's failure: it must not pass for the drain's own cancellation, which would cancel every
    item still queued and end the drain. (This was a real bug.)"""

    def batch(recorder: Recorder) -> BatchFn:
        async def run(resource: Resource, items: Sequence[int]) -> Sequence[Outcome]:
            outcomes = await recorder.batch(resource, items)
            if HOLD in items:
                doomed = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_soon(doomed.cancel)
                await doomed  # raises CancelledError, though nobody cancelled the drain
            return outcomes

        return run

    coalescer, recorder = kit.new(batch=batch)
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    (drain,) = drains(coalescer)
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2)]  # the next batch's
    await asyncio.sleep(0)
    recorder.release.set()
    outcomes = await within(asyncio.gather(first, *later, return_exceptions=True))
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [2, 4], f"the items of a later batch got {outcomes[1:]!r}"
    assert recorder.log == ["open 1", f"batch 1 [{HOLD}]", "close 1", "open 2", "batch 2 [1, 2]"]
    assert drains(coalescer) == {drain} and not drain.done()  # the same drain goes on
    assert await within(coalescer.submit(3)) == 6


# --- cancelled callers --------------------------------------------------------------------------


async def test_a_waiter_cancelled_while_its_batch_runs_does_not_affect_the_others(
    kit: Kit,
) -> None:
    coalescer, recorder = kit.new()
    tasks = {i: asyncio.ensure_future(coalescer.submit(i)) for i in (HOLD, 2, 3)}
    await until(recorder.entered.is_set)
    assert recorder.calls == [[HOLD, 2, 3]]
    tasks[2].cancel()  # not the last of its batch: the ones after it must still be settled
    with pytest.raises(asyncio.CancelledError):
        await within(tasks[2])
    recorder.release.set()
    assert await within(tasks[HOLD]) == HOLD * 2
    assert await within(tasks[3]) == 6
    assert recorder.calls == [[HOLD, 2, 3]]  # the cancelled item still ran with its batch
    assert await within(coalescer.submit(4)) == 8
    assert (coalescer.batches, coalescer.items) == (2, 4)


async def test_a_waiter_cancelled_before_its_batch_starts_still_has_its_item_run(
    kit: Kit,
) -> None:
    coalescer, recorder = kit.new()
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    queued = {i: asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)}
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):  # a caller giving up: wait_for cancels its submit
        await asyncio.wait_for(asyncio.shield(queued[1]), 0.001)
    queued[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(queued[1])
    recorder.release.set()
    assert await within(first) == HOLD * 2
    assert list(await within(asyncio.gather(queued[2], queued[3]))) == [4, 6]
    assert recorder.calls == [[HOLD], [1, 2, 3]]


# --- the resource and the drain's life ----------------------------------------------------------


async def test_the_resource_is_kept_across_batches_closed_after_linger_and_reopened(
    kit: Kit,
) -> None:
    linger = 0.2
    coalescer, recorder = kit.new(linger=linger)
    for i in range(4):
        assert await within(coalescer.submit(i)) == i * 2
        await asyncio.sleep(0.01)  # quiet, but much less than linger
    (drain,) = drains(coalescer)
    assert recorder.opened == [1] and recorder.used == [1, 1, 1, 1]
    assert recorder.closed == []
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    await ended({drain})
    assert recorder.closed == [1]
    assert loop.time() - quiet_since >= linger * 0.8, "the resource was closed before linger"
    assert drains(coalescer) == set()  # the drain ended with its resource
    assert await within(coalescer.submit(7)) == 14  # a new drain, a new resource
    assert recorder.log[-2:] == ["open 2", "batch 2 [7]"]
    assert drains(coalescer) and drains(coalescer) != {drain}


async def test_a_submit_while_the_lingering_drain_closes_its_resource_is_served(kit: Kit) -> None:
    """The drain that ends after ``linger`` awaits ``close``; a submit meanwhile must start a
    drain of its own, not wait for (or be forgotten by) the one that is ending."""
    coalescer, recorder = kit.new()
    recorder.close_gate = asyncio.Event()
    assert await within(coalescer.submit(1)) == 2
    (old,) = drains(coalescer)
    await until(recorder.closing.is_set)  # linger passed: the old drain is closing resource 1
    try:
        assert await asyncio.wait_for(coalescer.submit(2), 1.0) == 4
        assert recorder.log == ["open 1", "batch 1 [1]", "close 1", "open 2", "batch 2 [2]"]
        assert not old.done()  # still closing: the item did not wait for it
    finally:
        recorder.close_gate.set()
    await ended({old})


async def test_a_submit_racing_the_drains_exit_is_never_lost(kit: Kit) -> None:
    """Rounds of submits spaced around the linger time, so that many land just before, during
    or just after a drain's exit (its wait timing out, the close of its resource)."""
    linger = 0.01
    coalescer, recorder = kit.new(linger=linger)
    recorder.close_delay = 0.002
    rng = random.Random(20240611)

    async def later(item: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return await coalescer.submit(item)

    total = 0
    for round_ in range(100):
        await asyncio.sleep(linger * rng.uniform(0.5, 1.5))
        items = range(total, total + rng.randint(1, 3))
        total += len(items)
        submits = (later(i, rng.uniform(0, 0.003)) for i in items)
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*submits), 1.0)
        except TimeoutError:
            pytest.fail(f"round {round_}: an item was left waiting")
        assert outcomes == [i * 2 for i in items]
    assert coalescer.items == total
    assert len(recorder.opened) > 10, "the drains never lingered out: the race was not exercised"


async def test_a_submit_swept_across_the_drains_exit_step_by_step_is_never_lost(kit: Kit) -> None:
    """The drain's exit after ``linger`` takes a few loop iterations (the wait timing out, the
    queue seen empty, the drain leaving ``queue.tasks``): a submit ``k`` iterations after the
    linger's timer, for every ``k`` up to well past that exit, lands in each of them once."""
    linger = 0.005
    coalescer, recorder = kit.new(linger=linger)
    for k in range(3 * 16):
        assert await within(coalescer.submit(k)) == k * 2  # the drain now waits `linger`
        await asyncio.sleep(linger)  # a timer due with the drain's (or just after it)
        for _ in range(k % 16):
            await asyncio.sleep(0)  # one loop iteration each
        try:
            assert await asyncio.wait_for(coalescer.submit(1000 + k), 1.0) == (1000 + k) * 2
        except TimeoutError:
            pytest.fail(f"the submit {k % 16} iterations after the linger was left waiting")
    assert len(recorder.opened) > 1, "no drain lingered out: the exit was not exercised"


async def test_a_cancelled_drain_cancels_its_batch_and_the_queued_items_and_closes(
    kit: Kit,
) -> None:
    coalescer, recorder = kit.new()
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    queued = [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    (drain,) = drains(coalescer)
    drain.cancel()  # as the loop's shutdown does; nobody cancels the callers
    await within(asyncio.wait({drain, first, *queued}))
    assert drain.cancelled()
    assert first.cancelled(), "the caller of the cancelled batch was not cancelled"
    assert all(t.cancelled() for t in queued), "a queued caller was not cancelled"
    assert recorder.cancelled == 1 and recorder.calls == [[HOLD]]  # the queued never ran
    assert recorder.closed == [1]
    assert drains(coalescer) == set()
    assert coalescer._queues[asyncio.get_running_loop()].items == []
    assert await within(coalescer.submit(5)) == 10  # the coalescer still serves this loop
    assert recorder.log[-2:] == ["open 2", "batch 2 [5]"]


def test_asyncio_run_ending_while_a_batch_is_blocked_closes_the_resource() -> None:
    recorder = Recorder()
    coalescer = make(recorder, linger=3.0)  # asyncio.run must not wait for the linger
    seen: dict[str, Any] = {}
    loop_errors: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        seen["first"] = asyncio.ensure_future(coalescer.submit(HOLD))
        await until(recorder.entered.is_set)
        seen["queued"] = [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        (seen["drain"],) = drains(coalescer)
        seen["futures"] = [future for _, future in coalescer._queues[loop].items]
        # Returns with the batch still blocked: asyncio.run cancels what is left.

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 1.5
    assert seen["drain"].cancelled()
    assert recorder.cancelled == 1 and recorder.calls == [[HOLD]]
    assert recorder.closed == recorder.opened == [1]
    assert len(seen["futures"]) == 2 and all(f.cancelled() for f in seen["futures"])
    assert seen["first"].cancelled() and all(t.cancelled() for t in seen["queued"])
    assert loop_errors == []


def test_one_coalescer_serves_two_successive_event_loops() -> None:
    recorder = Recorder()
    coalescer = make(recorder, max_batch=5, linger=3.0)  # each loop ends its drain at shutdown
    loops: list[asyncio.AbstractEventLoop] = []
    queues: list[object] = []

    async def main(base: int) -> list[Got]:
        outcomes = await gather_outcomes(coalescer, range(base, base + 12))
        loops.append(asyncio.get_running_loop())
        queues.append(coalescer._queues[loops[-1]])
        return outcomes

    started = time.monotonic()
    assert asyncio.run(main(0)) == [i * 2 for i in range(12)]
    assert recorder.closed == [1]  # at the first loop's shutdown
    assert asyncio.run(main(100)) == [i * 2 for i in range(100, 112)]
    assert time.monotonic() - started < 2.0
    assert loops[0] is not loops[1] and queues[0] is not queues[1]
    assert recorder.sizes == [5, 5, 2, 5, 5, 2]
    assert recorder.used == [1, 1, 1, 2, 2, 2]  # a resource of each loop's own
    assert recorder.closed == [1, 2]
    assert (coalescer.batches, coalescer.items) == (6, 24)


# --- counters -----------------------------------------------------------------------------------


async def test_the_counters_add_up(kit: Kit) -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        if 5 in items:
            raise RuntimeError("batch failed")
        return double(items)

    delay = 0.01
    coalescer, recorder = kit.new(fn, max_batch=4, delay=delay)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes = await gather_outcomes(coalescer, range(10))
    wall = loop.time() - started
    assert [o for o in outcomes if isinstance(o, Raised)] != []
    assert (coalescer.batches, coalescer.items) == (3, 10)  # the failed batch counts too
    assert 3 * delay * 0.8 <= coalescer.busy_s <= wall
    (drain,) = drains(coalescer)
    await ended({drain})  # the linger is not busy time
    busy = coalescer.busy_s
    assert busy <= wall
    assert await within(coalescer.submit(20)) == 40  # a new drain adds to the same counters
    assert (coalescer.batches, coalescer.items) == (4, 11)
    assert coalescer.busy_s >= busy + delay * 0.8
    assert recorder.sizes == [4, 4, 2, 1]


# --- bugs found, not fixed yet ------------------------------------------------------------------


async def test_a_drain_cancelled_before_it_first_runs_does_not_wedge_the_loop() -> None:
    recorder = Recorder()
    coalescer = make(recorder)
    first = asyncio.ensure_future(coalescer.submit(1))
    later: asyncio.Future[int] | None = None
    try:
        await asyncio.sleep(0)  # the submit ran and created the drain, which has not run yet
        (drain,) = drains(coalescer)
        drain.cancel()
        await within(asyncio.wait({drain}))
        await asyncio.wait({first}, timeout=0.5)
        assert first.done(), "the queued item of the cancelled drain was never settled"
        later = asyncio.ensure_future(coalescer.submit(2))
        assert await asyncio.wait_for(asyncio.shield(later), 0.5) == 4
    finally:
        for task in (first, later):
            if task is not None:
                task.cancel()


@pytest.mark.parametrize("failure", ["raises", "cancelled-error"])
async def test_a_drain_cancelled_while_closing_a_failed_batch_settles_that_batch(
    failure: str,
) -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        if failure == "raises":
            raise RuntimeError("batch failed")
        raise asyncio.CancelledError  # the batch's own, not the drain's

    recorder = Recorder(fn)
    recorder.close_gate = asyncio.Event()
    coalescer = make(recorder)
    caller = asyncio.ensure_future(coalescer.submit(1))
    try:
        await until(recorder.closing.is_set)  # the batch failed: its resource is being closed
        (drain,) = drains(coalescer)
        drain.cancel()
        recorder.close_gate.set()
        await within(asyncio.wait({drain}))
        await asyncio.wait({caller}, timeout=0.5)
        assert caller.done(), "the failed batch's caller was left waiting"
        assert recorder.closed == [1], "the resource was closed twice"
    finally:
        caller.cancel()


class Fatal(BaseException):
    """A BaseException that is neither CancelledError nor KeyboardInterrupt nor SystemExit."""


async def test_a_base_exception_from_the_batch_fn_reaches_its_callers() -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        raise Fatal

    coalescer = make(Recorder(fn))
    callers = [asyncio.ensure_future(coalescer.submit(i)) for i in range(3)]
    await asyncio.sleep(0)
    dead = drains(coalescer)
    try:
        await asyncio.wait(callers, timeout=0.5)
        assert all(c.done() for c in callers), "the failed batch's callers were left waiting"
        assert all(isinstance(c.exception(), Fatal) for c in callers)
    finally:
        for caller in callers:
            caller.cancel()
        for task in dead:  # retrieve the drain's exception: no "never retrieved" noise
            if task.done() and not task.cancelled():
                task.exception()
