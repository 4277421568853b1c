"""Unit tests of ``bridge.workflows.coalesce``: the group commit under the workflow runner.

The runner's correctness rests on two promises of these classes that the database tests only
exercise by accident: every caller gets exactly its own outcome (a value, or its exception
raised in its own thread or coroutine, or the batch's exception for every item of a failed
batch), and no caller is ever left waiting (the sync hand-off of leadership, the async drains
per loop). A slip in either is a job that silently gets another job's result, or a worker that
hangs for ever, under concurrency the database tests rarely reach. So these tests drive both
classes with plain Python batch functions, no database, with timeouts everywhere so that a bug
fails a test instead of hanging it.

Some tests look at ``Coalescer._queue`` to know that threads are queued before a held batch is
released; that is the only way to make "these items share one batch" deterministic.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeVar

import pytest

from bridge.workflows.coalesce import AsyncCoalescer, Coalescer

A = TypeVar("A")

TIMEOUT = 5.0  # seconds; every wait in these tests is bounded by this
HOLD = -1  # the item whose batch a Recorder holds until released

Outcome = int | BaseException  # what a batch fn returns for one item
Fn = Callable[[Sequence[int]], Sequence[Outcome]]


@dataclass(frozen=True)
class Raised:
    """What a caller got when its submit raised (so a *returned* exception cannot pass for it)."""

    exc: BaseException


Got = int | Raised  # what a caller got


def double(items: Sequence[int]) -> list[Outcome]:
    return [i * 2 for i in items]


class Recorder:
    """A batch function that records its calls, how many ran at once, and can hold one batch.

    The batch holding ``HOLD`` sets ``entered`` and blocks until ``release`` is set (at most
    ``TIMEOUT``, so a broken test cannot hang the run).
    """

    def __init__(self, fn: Fn = double, *, delay: float = 0.0) -> None:
        self.fn = fn
        self.delay = delay
        self.calls: list[list[int]] = []
        self.threads: list[threading.Thread] = []
        self.spans: list[tuple[float, float]] = []
        self.active = 0
        self.max_active = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> Sequence[Outcome]:
        started = time.perf_counter()
        with self._lock:
            self.calls.append(list(items))
            self.threads.append(threading.current_thread())
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if HOLD in items:
                self.entered.set()
                if not self.release.wait(TIMEOUT):
                    raise TimeoutError("the held batch was never released")
            if self.delay:
                time.sleep(self.delay)
            return self.fn(items)
        finally:
            with self._lock:
                self.active -= 1
                self.spans.append((started, time.perf_counter()))

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.calls]


# --- helpers for threads ----------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class Submitters:
    """Threads that each submit one item to a Coalescer and keep its outcome."""

    def __init__(self, coalescer: Coalescer[int, int]) -> None:
        self.coalescer = coalescer
        self.outcomes: dict[int, Got] = {}
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(
        self, items: Sequence[int], *, barrier: bool = False, delays: Sequence[float] = ()
    ) -> None:
        gate = threading.Barrier(len(items)) if barrier else None

        def run(item: int, delay: float) -> None:
            if gate is not None:
                gate.wait(TIMEOUT)
            if delay:
                time.sleep(delay)
            try:
                outcome: Got = self.coalescer.submit(item)
            except BaseException as exc:
                outcome = Raised(exc)
            with self._lock:
                self.outcomes[item] = outcome

        for n, item in enumerate(items):
            delay = delays[n] if delays else 0.0
            thread = threading.Thread(target=run, args=(item, delay), daemon=True)
            self.threads.append(thread)
            thread.start()

    def join(self, timeout: float = TIMEOUT) -> dict[int, Got]:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        assert not stuck, f"{len(stuck)} submitting thread(s) were left waiting"
        return dict(self.outcomes)


def held_batch(
    coalescer: Coalescer[int, int], recorder: Recorder, items: Sequence[int]
) -> dict[int, Got]:
    """Run a batch holding HOLD, queue ``items`` behind it, release it; their outcomes."""
    submitters = Submitters(coalescer)
    submitters.start([HOLD])
    assert recorder.entered.wait(TIMEOUT), "the holding batch never started"
    rest = Submitters(coalescer)
    rest.start(items)
    wait_until(lambda: len(coalescer._queue) == len(items), "the items to queue")
    recorder.release.set()
    assert submitters.join() == {HOLD: HOLD * 2}
    return rest.join()


# --- Coalescer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_batch", [100, 4])
def test_threads_arriving_at_once_each_get_their_own_result(max_batch: int) -> None:
    recorder = Recorder(delay=0.005)
    coalescer: Coalescer[int, int] = Coalescer(recorder, max_batch=max_batch)
    submitters = Submitters(coalescer)
    submitters.start(range(30), barrier=True)
    assert submitters.join() == {i: i * 2 for i in range(30)}
    assert sorted(i for call in recorder.calls for i in call) == list(range(30))
    assert coalescer.items == sum(recorder.sizes) == 30
    assert coalescer.batches == len(recorder.calls)
    assert max(recorder.sizes) > 1, "no batch coalesced two threads"
    assert max(recorder.sizes) <= max_batch
    assert recorder.max_active == 1, "two batches ran at once"
    assert coalescer.busy_s > 0


def test_a_lone_submit_is_a_batch_of_one() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder)
    for item in (3, 4, 5):  # one after another: each leads, and leaves the coalescer idle
        submitters = Submitters(coalescer)
        submitters.start([item])
        assert submitters.join() == {item: item * 2}
    assert recorder.calls == [[3], [4], [5]]
    assert (coalescer.batches, coalescer.items) == (3, 3)


def test_items_queued_behind_a_batch_are_taken_max_batch_at_a_time() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder, max_batch=3)
    assert held_batch(coalescer, recorder, range(7)) == {i: i * 2 for i in range(7)}
    assert recorder.sizes == [1, 3, 3, 1]
    assert sorted(i for call in recorder.calls[1:] for i in call) == list(range(7))


def test_an_exception_outcome_is_raised_only_in_its_own_thread() -> None:
    errors = {i: ValueError(f"bad {i}") for i in (3, 5)}

    def fn(items: Sequence[int]) -> list[Outcome]:
        return [errors.get(i, i * 2) for i in items]

    recorder = Recorder(fn)
    coalescer: Coalescer[int, int] = Coalescer(recorder)
    outcomes = held_batch(coalescer, recorder, range(8))
    assert sorted(recorder.calls[1]) == list(range(8))  # one batch for all of them
    for i in range(8):
        if i in errors:
            assert outcomes[i] == Raised(errors[i])  # that very instance, raised
        else:
            assert outcomes[i] == i * 2


def test_a_raising_batch_fn_fails_every_item_of_its_batch_and_only_that_batch() -> None:
    boom = RuntimeError("batch failed")

    def fn(items: Sequence[int]) -> list[Outcome]:
        if 4 in items:
            raise boom
        return double(items)

    recorder = Recorder(fn)
    coalescer: Coalescer[int, int] = Coalescer(recorder)
    outcomes = held_batch(coalescer, recorder, range(6))  # the held batch [HOLD] succeeded
    assert recorder.sizes == [1, 6]
    assert sorted(outcomes) == list(range(6))
    assert all(outcomes[i] == Raised(boom) for i in range(6))
    # The coalescer keeps working afterwards, for one thread and for many.
    assert coalescer.submit(10) == 20
    submitters = Submitters(coalescer)
    submitters.start(range(20, 30), barrier=True)
    assert submitters.join() == {i: i * 2 for i in range(20, 30)}
    assert (coalescer.batches, coalescer.items) == (len(recorder.calls), 1 + 6 + 1 + 10)


def test_a_base_exception_from_the_batch_fn_reaches_every_item() -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        raise KeyboardInterrupt

    coalescer: Coalescer[int, int] = Coalescer(fn)
    submitters = Submitters(coalescer)
    submitters.start(range(5), barrier=True)
    outcomes = submitters.join()
    assert sorted(outcomes) == list(range(5))
    assert all(
        isinstance(o, Raised) and isinstance(o.exc, KeyboardInterrupt) for o in outcomes.values()
    )


@pytest.mark.parametrize("extra", [-1, 1], ids=["too-few", "too-many"])
def test_a_wrong_number_of_outcomes_is_an_error_for_its_items(extra: int) -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        outcomes = double(items)
        if HOLD in items:
            return outcomes
        return outcomes[:extra] if extra < 0 else [*outcomes, 0]

    recorder = Recorder(fn)
    coalescer: Coalescer[int, int] = Coalescer(recorder)
    outcomes = held_batch(coalescer, recorder, range(4))
    assert sorted(outcomes) == list(range(4))
    for outcome in outcomes.values():
        assert isinstance(outcome, Raised) and isinstance(outcome.exc, RuntimeError)
        assert "outcomes for 4 items" in str(outcome.exc)
    with pytest.raises(RuntimeError, match="outcomes for 1 items"):
        coalescer.submit(9)


def test_no_thread_is_ever_left_waiting_under_random_timing() -> None:
    """200 rounds of 8 threads with random small delays: every hand-off of leadership lands."""
    rng = random.Random(20240611)
    pauses = iter([rng.random() * 0.0003 for _ in range(100_000)])
    lock = threading.Lock()

    def fn(items: Sequence[int]) -> list[Outcome]:
        with lock:
            pause = next(pauses)
        time.sleep(pause)
        return double(items)

    recorder = Recorder(fn)
    coalescer: Coalescer[int, int] = Coalescer(recorder, max_batch=3)
    total = 0
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # thread switches between any two steps of a hand-off
    try:
        for round_ in range(200):
            items = range(round_ * 8, round_ * 8 + 8)
            submitters = Submitters(coalescer)
            submitters.start(items, delays=[rng.random() * 0.0005 for _ in items])
            assert submitters.join(timeout=2.0) == {i: i * 2 for i in items}, f"round {round_}"
            total += 8
    finally:
        sys.setswitchinterval(switch_interval)
    assert coalescer.items == total
    assert coalescer.batches == len(recorder.calls)
    assert max(recorder.sizes) <= 3
    assert recorder.max_active == 1
    assert not coalescer._busy and not coalescer._queue  # idle again: the next one leads


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_below_one_is_refused(max_batch: int) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(double, max_batch=max_batch)


# --- AsyncCoalescer ----------------------------------------------------------------------------


@pytest.fixture
def closing() -> Iterator[list[AsyncCoalescer[int, int]]]:
    """Coalescers to close after the test, so their batch threads end."""
    made: list[AsyncCoalescer[int, int]] = []
    yield made
    for coalescer in made:
        coalescer.close()


def make(
    closing: list[AsyncCoalescer[int, int]], fn: Fn, *, max_batch: int = 100, parallel: int = 1
) -> AsyncCoalescer[int, int]:
    coalescer: AsyncCoalescer[int, int] = AsyncCoalescer(
        fn, max_batch=max_batch, parallel=parallel, name="test-coalesce"
    )
    closing.append(coalescer)
    return coalescer


async def within(awaitable: Awaitable[A]) -> A:
    return await asyncio.wait_for(awaitable, TIMEOUT)


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await within(poll())


async def got(submit: Awaitable[int]) -> Got:
    try:
        return await submit
    except Exception as exc:
        return Raised(exc)


async def gather_outcomes(coalescer: AsyncCoalescer[int, int], items: Sequence[int]) -> list[Got]:
    return await within(asyncio.gather(*(got(coalescer.submit(i)) for i in items)))


@pytest.mark.parametrize("max_batch", [100, 8])
async def test_many_coroutines_each_get_their_own_result(
    closing: list[AsyncCoalescer[int, int]], max_batch: int
) -> None:
    recorder = Recorder()
    coalescer = make(closing, recorder, max_batch=max_batch)
    assert await gather_outcomes(coalescer, range(50)) == [i * 2 for i in range(50)]
    assert sorted(i for call in recorder.calls for i in call) == list(range(50))
    assert recorder.sizes[0] > 1, "the coroutines gathered at once were not coalesced"
    assert max(recorder.sizes) <= max_batch
    assert coalescer.items == sum(recorder.sizes) == 50
    assert coalescer.batches == len(recorder.calls)
    assert coalescer.busy_s > 0
    # The batches ran in the coalescer's thread, not on the loop.
    assert all(t is not threading.current_thread() for t in recorder.threads)


@pytest.mark.parametrize("parallel", [1, 2])
async def test_a_caller_submitting_again_right_after_its_result_is_served(
    closing: list[AsyncCoalescer[int, int]], parallel: int
) -> None:
    """The wake-up of a settled caller can run before the finished drain's done callbacks: a
    drain must count as gone by then, or the caller's next item waits with no drain to run it."""
    recorder = Recorder()
    coalescer = make(closing, recorder, parallel=parallel)

    async def chain(base: int) -> list[int]:  # awaits directly: no hop between, no wait_for
        return [await coalescer.submit(base + n) for n in range(10)]

    assert await within(chain(0)) == [n * 2 for n in range(10)]
    chains = await within(asyncio.gather(*(chain(100 * c) for c in range(1, 5))))
    assert chains == [[(100 * c + n) * 2 for n in range(10)] for c in range(1, 5)]
    assert coalescer.items == 50


async def test_items_submitted_while_a_batch_runs_go_into_a_later_batch(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    recorder = Recorder()
    coalescer = make(closing, recorder)
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0.02)
    assert recorder.calls == [[HOLD]]
    assert not first.done() and not any(t.done() for t in later)
    recorder.release.set()
    assert await within(first) == HOLD * 2
    assert await within(asyncio.gather(*later)) == [2, 4, 6]
    assert recorder.calls == [[HOLD], [1, 2, 3]]
    assert (coalescer.batches, coalescer.items) == (2, 4)


async def test_a_waiter_cancelled_while_its_batch_runs_does_not_break_the_others(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    recorder = Recorder()
    coalescer = make(closing, recorder)
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
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    recorder = Recorder()
    coalescer = make(closing, recorder)
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    queued = {i: asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)}
    await asyncio.sleep(0)
    queued[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(queued[1])
    recorder.release.set()
    assert await within(first) == HOLD * 2
    assert list(await within(asyncio.gather(queued[2], queued[3]))) == [4, 6]
    assert recorder.calls == [[HOLD], [1, 2, 3]]


async def test_an_exception_outcome_is_raised_only_in_its_own_coroutine(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    errors = {i: ValueError(f"bad {i}") for i in (0, 4, 9)}

    def fn(items: Sequence[int]) -> list[Outcome]:
        return [errors.get(i, i * 2) for i in items]

    recorder = Recorder(fn)
    coalescer = make(closing, recorder)
    outcomes = await gather_outcomes(coalescer, range(10))
    assert recorder.sizes == [10]  # all in one batch: the errors were sorted out per item
    for i, outcome in enumerate(outcomes):
        if i in errors:
            assert outcome == Raised(errors[i])  # that very instance, raised
        else:
            assert outcome == i * 2


async def test_a_raising_batch_fn_fails_its_batch_then_the_coalescer_works_again(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    boom = RuntimeError("batch failed")

    def fn(items: Sequence[int]) -> list[Outcome]:
        if 5 in items:
            raise boom
        return double(items)

    recorder = Recorder(fn)
    coalescer = make(closing, recorder, max_batch=4)
    outcomes = await gather_outcomes(coalescer, range(12))
    assert recorder.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert outcomes[:4] == [0, 2, 4, 6]
    assert outcomes[4:8] == [Raised(boom)] * 4
    assert outcomes[8:] == [16, 18, 20, 22]
    assert await within(coalescer.submit(20)) == 40
    assert (coalescer.batches, coalescer.items) == (4, 13)


@pytest.mark.parametrize("extra", [-1, 1], ids=["too-few", "too-many"])
async def test_a_wrong_number_of_outcomes_is_an_error_for_its_coroutines(
    closing: list[AsyncCoalescer[int, int]], extra: int
) -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        outcomes = double(items)
        return outcomes[:extra] if extra < 0 else [*outcomes, 0]

    coalescer = make(closing, fn)
    outcomes = await gather_outcomes(coalescer, range(3))
    for outcome in outcomes:
        assert isinstance(outcome, Raised) and isinstance(outcome.exc, RuntimeError)
        assert "outcomes for 3 items" in str(outcome.exc)


def test_one_coalescer_serves_two_successive_event_loops(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    recorder = Recorder()
    coalescer = make(closing, recorder, max_batch=5)
    loops: list[asyncio.AbstractEventLoop] = []

    async def main(base: int) -> list[Got]:
        loops.append(asyncio.get_running_loop())
        return await gather_outcomes(coalescer, range(base, base + 12))

    assert asyncio.run(main(0)) == [i * 2 for i in range(12)]
    assert asyncio.run(main(100)) == [i * 2 for i in range(100, 112)]
    assert loops[0] is not loops[1]
    assert (coalescer.batches, coalescer.items) == (6, 24)
    assert recorder.sizes == [5, 5, 2, 5, 5, 2]


def test_two_loops_at_once_each_drain_their_own_items(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    """Loops in two threads share the coalescer's batch thread but never a batch or a future."""
    recorder = Recorder()
    coalescer = make(closing, recorder)
    b_queued = threading.Event()
    b_outcomes: list[Got] = []

    async def loop_b() -> None:
        tasks = [asyncio.ensure_future(got(coalescer.submit(i))) for i in range(100, 105)]
        await asyncio.sleep(0)  # they are queued (behind the held batch of loop A)
        b_queued.set()
        b_outcomes.extend(await within(asyncio.gather(*tasks)))

    thread_b = threading.Thread(target=asyncio.run, args=(loop_b(),), daemon=True)

    async def loop_a() -> list[Got]:
        first = asyncio.ensure_future(got(coalescer.submit(HOLD)))
        await until(recorder.entered.is_set)
        thread_b.start()
        await until(b_queued.is_set)
        tasks = [asyncio.ensure_future(got(coalescer.submit(i))) for i in range(1, 5)]
        await asyncio.sleep(0)
        recorder.release.set()
        return await within(asyncio.gather(first, *tasks))

    assert asyncio.run(loop_a()) == [HOLD * 2, 2, 4, 6, 8]
    thread_b.join(TIMEOUT)
    assert not thread_b.is_alive(), "loop B was left waiting"
    assert b_outcomes == [i * 2 for i in range(100, 105)]
    assert recorder.calls[0] == [HOLD]
    assert sorted(recorder.calls[1:]) == [[1, 2, 3, 4], [100, 101, 102, 103, 104]]
    assert len(set(recorder.threads)) == 1  # parallel=1: one batch thread for both loops


async def test_parallel_two_runs_two_batches_at_the_same_time(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    both = threading.Barrier(2, timeout=TIMEOUT)

    def fn(items: Sequence[int]) -> list[Outcome]:
        both.wait()  # passes only when a second batch runs alongside this one
        return double(items)

    recorder = Recorder(fn)
    coalescer = make(closing, recorder, max_batch=2, parallel=2)
    assert await gather_outcomes(coalescer, range(4)) == [0, 2, 4, 6]
    assert recorder.max_active == 2
    assert sorted(recorder.calls) == [[0, 1], [2, 3]]
    (a_start, a_end), (b_start, b_end) = recorder.spans
    assert a_start < b_end and b_start < a_end, "the two batches did not overlap"


@pytest.mark.parametrize("parallel", [1, 2])
async def test_no_more_than_parallel_batches_run_at_once(
    closing: list[AsyncCoalescer[int, int]], parallel: int
) -> None:
    recorder = Recorder(delay=0.005)
    coalescer = make(closing, recorder, max_batch=1, parallel=parallel)
    first = await gather_outcomes(coalescer, range(6))
    # More items while those drains may still be ending: new drains must respect the bound too.
    tasks = [asyncio.ensure_future(coalescer.submit(i)) for i in range(6, 9)]
    await asyncio.sleep(0.003)
    tasks += [asyncio.ensure_future(coalescer.submit(i)) for i in range(9, 12)]
    rest = await within(asyncio.gather(*tasks))
    assert [*first, *rest] == [i * 2 for i in range(12)]
    assert recorder.max_active <= parallel
    assert recorder.sizes == [1] * 12
    if parallel == 1:
        spans = sorted(recorder.spans)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))


async def test_after_close_a_new_submit_runs_in_a_new_thread(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    recorder = Recorder()
    coalescer = make(closing, recorder)
    coalescer.close()  # never used: nothing to close
    assert await within(coalescer.submit(1)) == 2
    assert await within(coalescer.submit(2)) == 4
    coalescer.close()
    coalescer.close()  # twice is harmless
    assert await within(coalescer.submit(3)) == 6
    first, again, after = recorder.threads
    assert first is again, "one coalescer thread runs the batches until close()"
    assert after is not first, "close() did not retire the batch thread"
    first.join(TIMEOUT)
    assert not first.is_alive(), "the closed batch thread did not end"
    assert (coalescer.batches, coalescer.items) == (3, 3)


@pytest.mark.parametrize(("max_batch", "parallel"), [(0, 1), (1, 0), (-1, -1)])
def test_async_bounds_below_one_are_refused(max_batch: int, parallel: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        AsyncCoalescer(double, max_batch=max_batch, parallel=parallel)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "AsyncCoalescer._drain treats a CancelledError raised by the batch fn (in its thread) "
        "as the drain's own cancellation: it cancels every item still queued on the loop, "
        "items of later batches included, instead of failing only that batch"
    ),
)
async def test_a_batch_fn_raising_cancelled_error_fails_only_its_batch(
    closing: list[AsyncCoalescer[int, int]],
) -> None:
    def fn(items: Sequence[int]) -> list[Outcome]:
        if HOLD in items:
            raise asyncio.CancelledError  # e.g. from waiting on a cancelled concurrent future
        return double(items)

    recorder = Recorder(fn)
    coalescer = make(closing, recorder)
    first = asyncio.ensure_future(coalescer.submit(HOLD))
    await until(recorder.entered.is_set)
    later = asyncio.ensure_future(coalescer.submit(1))  # queued for the next batch
    await asyncio.sleep(0)
    recorder.release.set()
    outcomes = await within(asyncio.gather(first, later, return_exceptions=True))
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1] == 2, f"an item of a later batch got {outcomes[1]!r}"
