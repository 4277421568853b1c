-- HephaestusEcto's workflow_instances as its migrations V01..V03 leave it.

-- object: table workflow_instances
CREATE TABLE {prefix}.workflow_instances (
    id character varying(255) NOT NULL PRIMARY KEY,
    workflow character varying(255) NOT NULL,
    status character varying(255) NOT NULL DEFAULT 'pending',
    state jsonb NOT NULL DEFAULT '{}'::jsonb,
    inserted_at timestamp(0) without time zone NOT NULL,
    updated_at timestamp(0) without time zone NOT NULL,
    workflow_version integer NOT NULL DEFAULT 1
);
-- HephaestusEcto reads its installed migration version from this comment.
COMMENT ON TABLE {prefix}.workflow_instances IS '3';

-- object: index workflow_instances_status_index
CREATE INDEX workflow_instances_status_index
    ON {prefix}.workflow_instances USING btree (status);

-- object: index workflow_instances_workflow_index
CREATE INDEX workflow_instances_workflow_index
    ON {prefix}.workflow_instances USING btree (workflow);

-- object: index idx_workflow_instances_state
CREATE INDEX idx_workflow_instances_state
    ON {prefix}.workflow_instances USING gin (state jsonb_path_ops);

-- object: index workflow_instances_workflow_workflow_version_index
CREATE INDEX workflow_instances_workflow_workflow_version_index
    ON {prefix}.workflow_instances USING btree (workflow, workflow_version);
