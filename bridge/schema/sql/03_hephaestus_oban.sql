-- HephaestusOban's hephaestus_step_results as its migrations V01..V04 leave it.

-- object: table hephaestus_step_results
CREATE TABLE {prefix}.hephaestus_step_results (
    id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    instance_id character varying(255) NOT NULL
        REFERENCES {prefix}.workflow_instances (id) ON DELETE CASCADE,
    step_ref character varying(255) NOT NULL,
    event character varying(255) NOT NULL,
    context_updates jsonb NOT NULL DEFAULT '{}'::jsonb,
    processed boolean NOT NULL DEFAULT false,
    inserted_at timestamp without time zone NOT NULL DEFAULT now(),
    metadata_updates jsonb NOT NULL DEFAULT '{}'::jsonb,
    workflow_version integer NOT NULL DEFAULT 1
);
-- HephaestusOban reads its installed migration version from this comment.
COMMENT ON TABLE {prefix}.hephaestus_step_results IS '4';

-- object: index idx_step_results_pending
CREATE INDEX idx_step_results_pending
    ON {prefix}.hephaestus_step_results USING btree (instance_id) WHERE NOT processed;

-- object: index idx_step_results_unique
CREATE UNIQUE INDEX idx_step_results_unique
    ON {prefix}.hephaestus_step_results USING btree (instance_id, step_ref) WHERE NOT processed;
