"""A batch's last statement and its ``COMMIT`` go out pipelined (``execute_and_commit``): the
rows of the statement come back, everything the transaction wrote is committed, and a failing
statement commits nothing and leaves the connection idle for the next batch."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus

from bridge.workflows.store.batch import execute_and_commit

Conn = psycopg.Connection[Any]


def _table(conn: Conn, name: str) -> sql.Composed:
    conn.execute(sql.SQL("CREATE TABLE {} (n int)").format(sql.Identifier(name)))
    return sql.SQL("{}").format(sql.Identifier(name))


async def test_rows_come_back_and_the_transaction_commits(conn: Conn, database_url: str) -> None:
    table = _table(conn, "batch_commit_ok")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        await aconn.execute(sql.SQL("BEGIN; INSERT INTO {} VALUES (1)").format(table))
        rows = await execute_and_commit(
            aconn, sql.SQL("INSERT INTO {} VALUES (%(n)s) RETURNING n").format(table), {"n": 2}
        )
        assert rows == [(2,)]
        assert aconn.info.transaction_status == TransactionStatus.IDLE
    found = conn.execute(sql.SQL("SELECT n FROM {} ORDER BY n").format(table)).fetchall()
    assert found == [(1,), (2,)]


async def test_a_failing_statement_commits_nothing(conn: Conn, database_url: str) -> None:
    table = _table(conn, "batch_commit_failed")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
        await aconn.execute(sql.SQL("BEGIN; INSERT INTO {} VALUES (1)").format(table))
        with pytest.raises(psycopg.errors.DivisionByZero):
            await execute_and_commit(
                aconn, sql.SQL("INSERT INTO {} VALUES (1 / %(n)s)").format(table), {"n": 0}
            )
        assert aconn.info.transaction_status == TransactionStatus.IDLE
        # The connection serves the next batch.
        await aconn.execute(sql.SQL("BEGIN; INSERT INTO {} VALUES (3)").format(table))
        assert await execute_and_commit(aconn, sql.SQL("SELECT 1"), {}) == [(1,)]
    found = conn.execute(sql.SQL("SELECT n FROM {} ORDER BY n").format(table)).fetchall()
    assert found == [(3,)]
