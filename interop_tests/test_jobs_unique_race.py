"""Python and Elixir insert the same unique job at the same moment: each job executes once.

300 rounds, each a unique job of its own (`Fixture.Echo`, args `{"race": n}`). In every round
the fixture (`unique.race`: Oban's Basic `insert_unique`, one BEAM process per insert) and a
Python thread (the suspended/wait/settle protocol of docs/uniqueness.md: `bridge.insert` in
half of the threads, `insert_async` in the others) insert that job at instants a few hundred
microseconds apart (seeded offsets, both orders, many at the same microsecond). The unique
options rotate through Oban's forms: `true` (period infinity), a 60 s period, and `keys` with
the `incomplete` states group (where each side's args differ outside the key). `meta.side`
tells whose row is whose; meta is not a unique field.

Then the jobs run — even rounds on a Python node, odd rounds on the fixture's own queue — and
the documented guarantee is checked round by round: exactly one row of the round executes,
once; every other row is a cancelled, never-run Python row; each side reports the row that
runs. The figures (rows, executions, conflicts per side, how each race was settled) are printed.

It runs twice: with both languages logged in as one role, and with an ordinary role for each
(the second found that waiting through pg_stat_activity saw nothing of the other role's
transactions; docs/uniqueness.md).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bridge import Job, insert
from bridge.jobs.client.enqueue import insert_async
from interop_tests.fixture import ElixirFixture
from interop_tests.support import ECHO, echo_registry, eventually, in_thread
from tests.jobs.support import running_node

ROUNDS = 300
SPACING_US = 10_000  # between rounds: each round's two inserts race only with each other
LEAD_US = 600_000  # from now to the first round: time for the command to reach the VM
PY_THREADS = 6
PY, EX = "py", "ex"
# Elixir's start relative to Python's, in microseconds (negative: Elixir first).
OFFSETS_US = [-3000, -1500, -800, -400, -200, -100, 0, 0, 0, 0, 100, 200, 400, 800, 1500, 3000]

UNIQUE_FORMS: list[Any] = [
    True,
    {"period": 60},
    {"keys": ["race"], "period": 120, "states": "incomplete"},
]


def round_queue(n: int) -> str:
    return PY if n % 2 == 0 else EX


def round_job(n: int, side: str) -> dict[str, Any]:
    """The enqueue spec both sides use for round ``n`` (``side`` only in meta / unkeyed args)."""
    form = UNIQUE_FORMS[n % len(UNIQUE_FORMS)]
    args: dict[str, Any] = {"race": n}
    if isinstance(form, dict) and "keys" in form:
        args["from"] = side  # outside the keys: still the same unique job
    return {
        "worker": ECHO,
        "args": args,
        "queue": round_queue(n),
        "meta": {"side": side},
        "unique": form,
    }


def python_job(n: int) -> Job:
    spec = round_job(n, "python")
    return Job.new(
        spec["worker"], spec["args"], queue=spec["queue"], meta=spec["meta"], unique=spec["unique"]
    )


def outcome(inserted: Job, at_us: int, started: float) -> dict[str, Any]:
    return {
        "id": inserted.id,
        "conflict": inserted.conflict,
        "state": inserted.state,
        "late_us": int(started * 1e6 - at_us),
        "took_us": int((time.time() - started) * 1e6),
    }


def python_inserts(url: str, prefix: str, at_us: list[int]) -> dict[int, dict[str, Any]]:
    """Each round's Python insert at its instant, from PY_THREADS threads (rounds dealt out).

    Even threads use the blocking ``insert``, odd ones ``insert_async`` on an event loop of
    their own: the protocol has a sync and an async implementation, and both race here.
    """
    results: dict[int, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def blocking(rounds: list[int]) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for n in rounds:
                job = python_job(n)
                time.sleep(max(0.0, at_us[n] / 1e6 - time.time()))
                started = time.time()
                results[n] = outcome(insert(conn, job, prefix=prefix), at_us[n], started)

    async def asynchronous(rounds: list[int]) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for n in rounds:
                job = python_job(n)
                await asyncio.sleep(max(0.0, at_us[n] / 1e6 - time.time()))
                started = time.time()
                inserted = await insert_async(conn, job, prefix=prefix)
                results[n] = outcome(inserted, at_us[n], started)

    def worker(k: int) -> None:
        rounds = list(range(k, ROUNDS, PY_THREADS))
        try:
            if k % 2 == 0:
                blocking(rounds)
            else:
                asyncio.run(asynchronous(rounds))
        except BaseException as exc:  # reported by the test, never swallowed
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(PY_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def race(fx: ElixirFixture, url: str, prefix: str) -> tuple[dict[int, Any], dict[int, Any]]:
    rng = random.Random(20261201)
    start = int(time.time() * 1e6) + LEAD_US
    py_at = [start + n * SPACING_US for n in range(ROUNDS)]
    ex_at = [at + rng.choice(OFFSETS_US) for at in py_at]
    reply: dict[str, Any] = {}
    failures: list[BaseException] = []

    def elixir_side() -> None:
        try:
            reply.update(
                fx.call(
                    "unique.race",
                    jobs=[round_job(n, "elixir") for n in range(ROUNDS)],
                    at_us=ex_at,
                    timeout_ms=30_000,
                )
            )
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=elixir_side)
    thread.start()
    py_results = python_inserts(url, prefix, py_at)
    thread.join()
    if failures:
        raise failures[0]
    ex_results = {
        n: {
            **result,
            "late_us": result["started_us"] - ex_at[n],
            "took_us": result["ended_us"] - result["started_us"],
        }
        for n, result in enumerate(reply["results"])
    }
    return py_results, ex_results


def all_rows(url: str, prefix: str) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT id, state::text AS state, queue, args, meta, attempt, attempted_by, "
        "cancelled_at, completed_at FROM {}.oban_jobs ORDER BY id"
    ).format(sql.Identifier(prefix))
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


def round_problems(
    n: int, rows: list[dict[str, Any]], py: dict[str, Any], ex: dict[str, Any]
) -> list[str]:
    """Everything wrong with one round, each naming the round, the row and the field."""
    problems: list[str] = []
    where = f"round {n} ({UNIQUE_FORMS[n % len(UNIQUE_FORMS)]!r}, queue {round_queue(n)})"
    sides = Counter(row["meta"].get("side") for row in rows)
    if sides["python"] > 1 or sides["elixir"] > 1 or set(sides) - {"python", "elixir"}:
        problems.append(f"{where}: rows by side {dict(sides)}")
    executions = sum(row["attempt"] for row in rows)
    ran = [row for row in rows if row["attempt"] > 0]
    if executions != 1:
        detail = [(r["id"], r["meta"].get("side"), r["state"], r["attempt"]) for r in rows]
        problems.append(
            f"{where}: {executions} executions, rows (id, side, state, attempt) {detail}"
        )
    for row in rows:
        if row["attempt"] == 0 and (row["state"] != "cancelled" or row["cancelled_at"] is None):
            problems.append(f"{where}: row {row['id']} never ran but is {row['state']}")
        if row["attempt"] == 0 and row["meta"].get("side") != "python":
            problems.append(f"{where}: {row['meta'].get('side')} row {row['id']} was cancelled")
        if "bridge_pending" in row["meta"]:
            problems.append(f"{where}: row {row['id']} still has meta.bridge_pending")
    for row in ran:
        if row["state"] != "completed":
            problems.append(f"{where}: row {row['id']} ran but is {row['state']}")
    if len(ran) == 1:
        winner = ran[0]["id"]
        for side, result in (("python", py), ("elixir", ex)):
            if result["id"] != winner:
                problems.append(
                    f"{where}: {side} insert answered job {result['id']} "
                    f"(conflict={result['conflict']}), the job that ran is {winner}"
                )
        if [py["conflict"], ex["conflict"]].count(False) != 1:
            problems.append(
                f"{where}: conflict flags python={py['conflict']} elixir={ex['conflict']}, "
                "exactly one side should have inserted the job that runs"
            )
    return problems


def spread(values: list[int]) -> str:
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]}/{ordered[-1]}"


SETTLEMENTS = (
    "elixir saw python's pending row",
    "python yielded after its insert (step 3)",
    "python found elixir's row first (step 1)",
)


def settlement(rows: list[dict[str, Any]], py: dict[str, Any], ex: dict[str, Any]) -> str:
    """How the round's race was decided."""
    sides = {row["meta"].get("side") for row in rows}
    if ex["conflict"]:
        return SETTLEMENTS[0]
    return SETTLEMENTS[1] if "python" in sides else SETTLEMENTS[2]


@contextmanager
def login_roles(url: str, schema: str, count: int) -> Iterator[list[str]]:
    """Plain (non-superuser) login roles with the rights an app has on ``schema``; dropped after."""
    names = [f"bridge_race_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    grants = [
        "CREATE ROLE {role} LOGIN",
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            for grant in grants:
                conn.execute(
                    sql.SQL(grant).format(role=sql.Identifier(name), schema=sql.Identifier(schema))
                )
    try:
        yield names
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in names:
                conn.execute(
                    sql.SQL(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s"
                    ),
                    (name,),
                )
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role(url: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(url, user=role)


@pytest.mark.parametrize("roles", ["one role", "a role per language"])
async def test_unique_job_raced_across_languages_executes_once(
    fx: ElixirFixture, database_url: str, schema: str, roles: str
) -> None:
    """With a role per language, each side is an ordinary role that cannot read the other's
    session details in pg_stat_activity (no pg_read_all_stats): the protocol must not need them.
    """
    with ExitStack() as stack:
        python_url = elixir_url = database_url
        if roles != "one role":
            python_role, elixir_role = stack.enter_context(login_roles(database_url, schema, 2))
            python_url, elixir_url = (
                as_role(database_url, python_role),
                as_role(database_url, elixir_role),
            )
        fx.connect(elixir_url, schema, node="vm", pool_size=4)
        py_results, ex_results = await in_thread(race, fx, python_url, schema)
        fx.call("disconnect")
    fx.connect(database_url, schema, node="vm", pool_size=4)
    assert sorted(py_results) == sorted(ex_results) == list(range(ROUNDS))

    inserted = all_rows(database_url, schema)
    py_rounds = sum(1 for n in range(ROUNDS) if round_queue(n) == PY)
    async with running_node(database_url, schema, {PY: 10}, echo_registry(), node="py") as node:
        await in_thread(fx.call, "start_queue", queue=EX, limit=10)
        await in_thread(fx.call, "wait_idle", queues=[EX], timeout_ms=20_000)
        await eventually(
            lambda: all(
                row["state"] in ("completed", "cancelled")
                for row in all_rows(database_url, schema)
                if row["queue"] == PY
            ),
            what="the Python node to run its rounds",
            timeout=20,
        )
        await in_thread(fx.call, "stop_queue", queue=EX)
        python_claims = node.producers[PY].claimed

    rows = all_rows(database_url, schema)
    by_round: dict[int, list[dict[str, Any]]] = {n: [] for n in range(ROUNDS)}
    for row in rows:
        by_round[row["args"]["race"]].append(row)
    problems = [
        p
        for n in range(ROUNDS)
        for p in round_problems(n, by_round[n], py_results[n], ex_results[n])
    ]
    settled = Counter(settlement(by_round[n], py_results[n], ex_results[n]) for n in range(ROUNDS))
    timing = {
        f"{side} {what}": spread([r[f"{what}_us"] for r in results.values()])
        for side, results in (("python", py_results), ("elixir", ex_results))
        for what in ("late", "took")
    }
    print(
        f"\nunique race ({roles}): {ROUNDS} rounds, {len(rows)} rows "
        f"({len(inserted)} after the inserts), "
        f"{sum(r['attempt'] for r in rows)} executions "
        f"(the python node claimed {python_claims} for {py_rounds} python-queue rounds), "
        f"conflicts python={sum(r['conflict'] for r in py_results.values())} "
        f"elixir={sum(r['conflict'] for r in ex_results.values())}\n"
        f"  settled: {dict(settled)}\n  microseconds p50/max: {timing}"
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
    # Only evidence if the races were real: every way of settling one must have happened.
    missing = set(SETTLEMENTS) - set(settled)
    assert not missing, f"no round was settled as {sorted(missing)}: the inserts did not race"
    assert python_claims == py_rounds, "the Python node ran a job more than once or not at all"
