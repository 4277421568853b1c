-- Oban's Postgres schema as its migrations v01..v14 leave it (Oban 2.23).
-- {prefix} is the quoted schema prefix. Each "-- object:" block is created only when that
-- object is missing; nothing here is ever run against an object that already exists.

-- object: type oban_job_state
CREATE TYPE {prefix}.oban_job_state AS ENUM (
    'available',
    'suspended',
    'scheduled',
    'executing',
    'retryable',
    'completed',
    'discarded',
    'cancelled'
);

-- object: table oban_jobs
CREATE TABLE {prefix}.oban_jobs (
    id bigserial PRIMARY KEY,
    state {prefix}.oban_job_state NOT NULL DEFAULT 'available',
    queue text NOT NULL DEFAULT 'default',
    worker text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}'::jsonb,
    errors jsonb[] NOT NULL DEFAULT ARRAY[]::jsonb[],
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 20,
    inserted_at timestamp without time zone NOT NULL DEFAULT timezone('UTC', now()),
    scheduled_at timestamp without time zone NOT NULL DEFAULT timezone('UTC', now()),
    attempted_at timestamp without time zone,
    completed_at timestamp without time zone,
    attempted_by text[],
    discarded_at timestamp without time zone,
    priority integer NOT NULL DEFAULT 0,
    tags text[] DEFAULT ARRAY[]::text[],
    meta jsonb DEFAULT '{}'::jsonb,
    cancelled_at timestamp without time zone,
    CONSTRAINT attempt_range CHECK (attempt >= 0 AND attempt <= max_attempts),
    CONSTRAINT positive_max_attempts CHECK (max_attempts > 0),
    CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
    CONSTRAINT worker_length CHECK (char_length(worker) > 0 AND char_length(worker) < 128)
);
-- v12 adds this one NOT VALID, and pg_dump shows it that way on an Elixir-migrated database.
ALTER TABLE {prefix}.oban_jobs
    ADD CONSTRAINT non_negative_priority CHECK (priority >= 0) NOT VALID;
-- Oban reads its installed migration version from this comment.
COMMENT ON TABLE {prefix}.oban_jobs IS '14';

-- object: index oban_jobs_state_queue_priority_scheduled_at_id_index
CREATE INDEX oban_jobs_state_queue_priority_scheduled_at_id_index
    ON {prefix}.oban_jobs USING btree (state, queue, priority, scheduled_at, id);

-- object: index oban_jobs_args_index
CREATE INDEX oban_jobs_args_index ON {prefix}.oban_jobs USING gin (args);

-- object: index oban_jobs_meta_index
CREATE INDEX oban_jobs_meta_index ON {prefix}.oban_jobs USING gin (meta);

-- object: index oban_jobs_state_cancelled_at_index
CREATE INDEX oban_jobs_state_cancelled_at_index
    ON {prefix}.oban_jobs USING btree (state, cancelled_at);

-- object: index oban_jobs_state_discarded_at_index
CREATE INDEX oban_jobs_state_discarded_at_index
    ON {prefix}.oban_jobs USING btree (state, discarded_at);

-- object: table oban_peers
CREATE UNLOGGED TABLE {prefix}.oban_peers (
    name text NOT NULL PRIMARY KEY,
    node text NOT NULL,
    started_at timestamp without time zone NOT NULL,
    expires_at timestamp without time zone NOT NULL
);
