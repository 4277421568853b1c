"""The SQL the job runtime runs, one readable statement each, with the prefix as an identifier.

Each statement mirrors what Oban's Basic engine (``lib/oban/engines/basic.ex``, 2.23.1) makes
Ecto send, so that rows end up identical; where we batch several jobs into one statement the
per-row effect is the same as Oban's one-row statements.
"""

from __future__ import annotations

from functools import lru_cache

from psycopg import sql

# Insert many jobs in one statement: arrays in, one row per element out. Tags travel as a
# jsonb array per job because PostgreSQL arrays of arrays must be rectangular. A NULL
# inserted_at or scheduled_at is the database's clock, as Oban leaves both to the columns'
# default (timezone('UTC', now())): the same instant for every row of the transaction.
INSERT_JOBS = """
INSERT INTO {prefix}.oban_jobs
    (state, queue, worker, args, meta, tags, max_attempts, priority, inserted_at, scheduled_at)
SELECT x.state::{prefix}.oban_job_state, x.queue, x.worker, x.args, x.meta,
       ARRAY(SELECT jsonb_array_elements_text(x.tags)), x.max_attempts, x.priority,
       COALESCE(x.inserted_at, timezone('UTC', now())),
       COALESCE(x.scheduled_at, timezone('UTC', now()))
FROM unnest(%(state)b::text[], %(queue)b::text[], %(worker)b::text[], %(args)b::jsonb[],
            %(meta)b::jsonb[], %(tags)b::jsonb[], %(max_attempts)b::int[], %(priority)b::int[],
            %(inserted_at)b::timestamp[], %(scheduled_at)b::timestamp[])
     WITH ORDINALITY AS x(state, queue, worker, args, meta, tags, max_attempts, priority,
                          inserted_at, scheduled_at, n)
ORDER BY x.n
RETURNING *
"""

# One job: the same row as INSERT_JOBS writes for a one-element batch (tags through the same
# jsonb array), and its oban_insert notification in the same statement when it is available.
# pg_notify queues the message in the transaction like a separate NOTIFY would: it is delivered
# at COMMIT, and PostgreSQL still folds identical ones sent in one transaction.
# ``{condition}`` is ``true``, or a caller's guard (``insert_one_unless``): the row is written
# only while it holds, checked in the same statement.
JOB_ROW = """
INSERT INTO {prefix}.oban_jobs
    (state, queue, worker, args, meta, tags, max_attempts, priority, inserted_at, scheduled_at)
SELECT %(state)s::text::{prefix}.oban_job_state, %(queue)s::text, %(worker)s::text,
       %(args)s::jsonb, %(meta)s::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(%(tags)s::jsonb)), %(max_attempts)s::int,
       %(priority)s::int, COALESCE(%(inserted_at)s::timestamp, timezone('UTC', now())),
       COALESCE(%(scheduled_at)s::timestamp, timezone('UTC', now()))
WHERE {condition}
RETURNING *
"""

INSERT_JOB = (
    "WITH job AS ("
    + JOB_ROW
    + """)
SELECT job.*,
       CASE WHEN job.state = 'available' THEN pg_notify(%(channel)s, %(payload)s)::text END
           AS bridge_notified
FROM job
"""
)

# Bulk path: ids come from the table's own sequence first, so COPY (which cannot RETURN) still
# tells us every job's id, with the database's clock (the transaction's now(), as INSERT_JOBS
# and the columns' defaults use) for the timestamps; the rows are the same as INSERT_JOBS writes.
# The sequence is looked up once (per row, pg_get_serial_sequence cost 3 of the 3.4 ms of a
# 1,000-id statement) and the ids come back as one array. The batch's oban_insert
# notifications ride along: queued in the transaction like a separate NOTIFY, delivered only
# at COMMIT, gone if the COPY fails; one round trip less.
NEXT_JOB_IDS = """
SELECT array_agg(nextval(seq)) AS ids,
       timezone('UTC', now()) AS now,
       (SELECT count(pg_notify(%(channel)s, payload))
        FROM unnest(%(payloads)s::text[]) AS payload) AS notified
FROM CAST(pg_get_serial_sequence(%(table)s, 'id') AS regclass) AS seq,
     generate_series(1, %(n)s)
"""

# Text format, its data always UTF-8 whatever the session's client_encoding
# (insert_rows.copy_data writes it).
COPY_JOBS = """
COPY {prefix}.oban_jobs
    (id, state, queue, worker, args, meta, tags, max_attempts, priority, inserted_at, scheduled_at)
FROM STDIN (ENCODING 'UTF8')
"""

# Oban's fetch: the CTE is an optimisation fence so the planner cannot turn the LIMIT into a
# nested loop that updates more rows than asked for. The claimed rows come back with their jsonb
# as text (errors element by element) and their timestamps as to_jsonb prints them ("infinity",
# "10000-01-01T00:00:00" and "... BC" included), so no value can fail in the driver after the
# claim has committed: Job.from_text_row decodes each row on its own, and a row that cannot be
# decoded is that row's failure alone.
FETCH_JOBS = """
WITH subset AS (
    SELECT id FROM {prefix}.oban_jobs
    WHERE state = 'available' AND queue = %(queue)s
    ORDER BY priority ASC, scheduled_at ASC, id ASC
    LIMIT %(demand)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {prefix}.oban_jobs AS j
SET state = 'executing',
    attempted_at = %(now)s,
    attempted_by = %(attempted_by)s,
    attempt = j.attempt + 1
FROM subset
WHERE j.id = subset.id AND j.attempt < j.max_attempts
RETURNING j.id, j.state::text AS state, j.queue, j.worker, j.args::text AS args,
          j.errors::text[] AS errors, j.attempt, j.max_attempts, j.attempted_by, j.priority,
          j.tags, j.meta::text AS meta,
          to_jsonb(j.inserted_at) #>> '{{}}' AS inserted_at,
          to_jsonb(j.scheduled_at) #>> '{{}}' AS scheduled_at,
          to_jsonb(j.attempted_at) #>> '{{}}' AS attempted_at,
          to_jsonb(j.completed_at) #>> '{{}}' AS completed_at,
          to_jsonb(j.discarded_at) #>> '{{}}' AS discarded_at,
          to_jsonb(j.cancelled_at) #>> '{{}}' AS cancelled_at
"""

# Every outcome of a batch in one statement. Per row it does what Oban's complete_job,
# error_job, discard_job, cancel_job (with an error) and snooze_job do: only the columns that
# outcome sets change; an error entry is appended with ||. An outcome applies only to the attempt
# that produced it: the row must still carry the attempt and attempted_by ([node, producer uuid])
# its claim wrote, and still be `executing`. So a late outcome (from a node frozen past its
# rescue, then thawed) never overwrites a newer state, whether the row was rescued, claimed again
# or finished meanwhile. The one exception is a job killed by Oban.cancel_job's pkill, which Oban
# also stamps `cancelled` again with a `{:cancel, :shutdown}` entry after cancel_job already set
# the state: allowed for that same attempt only (cancel_job leaves attempt and attempted_by as
# they are). It returns the (id, attempt) of the outcomes it applied.
ACK_JOBS = """
UPDATE {prefix}.oban_jobs AS j
SET state = x.state::{prefix}.oban_job_state,
    completed_at = COALESCE(x.completed_at, j.completed_at),
    discarded_at = COALESCE(x.discarded_at, j.discarded_at),
    cancelled_at = COALESCE(x.cancelled_at, j.cancelled_at),
    scheduled_at = COALESCE(x.scheduled_at, j.scheduled_at),
    max_attempts = j.max_attempts + x.max_attempts_inc,
    errors = CASE WHEN x.error IS NULL THEN j.errors ELSE j.errors || x.error END,
    -- recorded output merges into an object meta only: || on a JSON array, null or scalar would
    -- build an array holding the recorded object; such a meta stays as written
    meta = CASE WHEN x.meta IS NULL OR jsonb_typeof(j.meta) IS DISTINCT FROM 'object' THEN j.meta
                ELSE j.meta || x.meta END
FROM unnest(%(id)b::bigint[], %(attempt)b::int[], %(attempted_by)b::jsonb[], %(state)b::text[],
            %(completed_at)b::timestamp[], %(discarded_at)b::timestamp[],
            %(cancelled_at)b::timestamp[], %(scheduled_at)b::timestamp[],
            %(max_attempts_inc)b::int[], %(error)b::jsonb[], %(meta)b::jsonb[])
     AS x(id, attempt, attempted_by, state, completed_at, discarded_at, cancelled_at,
          scheduled_at, max_attempts_inc, error, meta)
WHERE j.id = x.id
  AND j.attempt = x.attempt
  AND to_jsonb(j.attempted_by) = x.attempted_by
  AND (j.state = 'executing' OR (x.state = 'cancelled' AND j.state = 'cancelled'))
RETURNING j.id, j.attempt
"""

# The rows of outcomes ACK_JOBS left alone, as they are now, so the log can say why (rare: read
# only when something was dropped).
ACK_DROPPED_ROWS = """
SELECT id, state::text, attempt, attempted_by FROM {prefix}.oban_jobs WHERE id = ANY(%(ids)s)
"""

NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"


@lru_cache(maxsize=256)
def render(template: str, prefix: str) -> sql.Composed:
    """Put the quoted prefix into a template; cached because the hot path renders the same few."""
    return sql.SQL(template).format(prefix=sql.Identifier(prefix))


@lru_cache(maxsize=256)
def render_insert_job(
    prefix: str, condition: str = "true", template: str = INSERT_JOB
) -> sql.Composed:
    """INSERT_JOB (or another statement built around JOB_ROW) with its guard, itself a
    template with ``{prefix}``."""
    ident = sql.Identifier(prefix)
    guard = sql.SQL(condition).format(prefix=ident)
    return sql.SQL(template).format(prefix=ident, condition=guard)


# A job's columns as text, so no value can fail in the driver: jsonb as PostgreSQL prints it, each
# errors element likewise, timestamps as row_to_json prints them ("2026-11-23T01:08:42.46",
# "infinity", "10000-01-01T00:00:00", "0044-03-15T00:00:00 BC"). Read with the table aliased
# ``j``; ``Job.from_text_row`` decodes it, one row's failure its own.
TEXT_TIMESTAMPS = (
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)
JOB_AS_TEXT = sql.SQL(", ").join(
    [
        sql.SQL("j.id, j.state::text AS state, j.queue, j.worker, j.args::text AS args"),
        sql.SQL(
            "ARRAY(SELECT e::text FROM unnest(j.errors) WITH ORDINALITY AS u(e, n) ORDER BY n)"
            " AS errors"
        ),
        sql.SQL("j.attempt, j.max_attempts, j.attempted_by, j.priority, j.tags"),
        sql.SQL("j.meta::text AS meta"),
        *(
            sql.SQL("to_jsonb(j.{col}) #>> '{{}}' AS {col}").format(col=sql.Identifier(col))
            for col in TEXT_TIMESTAMPS
        ),
    ]
)
