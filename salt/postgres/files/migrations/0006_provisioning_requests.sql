-- VMs asked for through the API (POST /v1/provisioning): the API records the
-- request and pokes the salt-master; the master's gopbx.provision runner claims a
-- pending row, runs the salt-cloud profile and records the outcome. An event
-- naming a row that is not pending does nothing, so a forged one creates no VM.
CREATE TABLE gopbx.provisioning_requests (
    id           bigserial PRIMARY KEY,
    profile      text NOT NULL CHECK (profile IN ('freeswitch', 'kamailio-standby', 'pg-replica')),
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'created', 'failed')),
    requested_by text NOT NULL,
    name         text,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON gopbx.provisioning_requests TO gopbx_api;
GRANT USAGE ON SEQUENCE gopbx.provisioning_requests_id_seq TO gopbx_api;
GRANT SELECT, UPDATE ON gopbx.provisioning_requests TO gopbx_salt;
