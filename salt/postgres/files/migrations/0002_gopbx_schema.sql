-- The gopbx schema: what the platform knows beyond Kamailio's own tables.
-- The API writes tenants and extensions; Salt writes nodes, dispatcher sets and
-- shard assignments; both append to the audit log.

CREATE SCHEMA gopbx;

-- A dispatcher set is a shard: a group of FreeSWITCH nodes serving some tenants.
CREATE TABLE gopbx.dispatcher_sets (
    setid integer PRIMARY KEY CHECK (setid > 0),
    region text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A tenant is a SIP domain (Kamailio's domain/domain_attrs carry its routing view).
CREATE TABLE gopbx.tenants (
    id bigserial PRIMARY KEY,
    domain varchar(64) NOT NULL UNIQUE CHECK (domain = lower(domain)),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    max_calls integer NOT NULL CHECK (max_calls > 0),
    calls_per_second integer NOT NULL CHECK (calls_per_second > 0),
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gopbx.extensions (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES gopbx.tenants (id) ON DELETE CASCADE,
    number varchar(32) NOT NULL CHECK (number ~ '^[0-9]{2,15}$'),
    caller_id_name text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, number)
);

-- Which dispatcher set serves a tenant: decided by the master's placement, never by a node.
CREATE TABLE gopbx.shard_assignments (
    tenant_id bigint PRIMARY KEY REFERENCES gopbx.tenants (id) ON DELETE CASCADE,
    setid integer NOT NULL REFERENCES gopbx.dispatcher_sets (setid),
    assigned_at timestamptz NOT NULL DEFAULT now(),
    assigned_by text NOT NULL
);
CREATE INDEX shard_assignments_setid_idx ON gopbx.shard_assignments (setid);

-- A FreeSWITCH media node, known by its Salt minion id.
CREATE TABLE gopbx.nodes (
    id bigserial PRIMARY KEY,
    minion_id text NOT NULL UNIQUE CHECK (minion_id ~ '^fs-[a-z]+-[0-9]+$'),
    address inet NOT NULL,
    sip_port integer NOT NULL DEFAULT 5080 CHECK (sip_port BETWEEN 1 AND 65535),
    setid integer NOT NULL REFERENCES gopbx.dispatcher_sets (setid),
    capacity integer NOT NULL CHECK (capacity > 0),
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'removed')),
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only: writers get INSERT, nobody but the owner gets UPDATE or DELETE.
CREATE TABLE gopbx.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    object_type text NOT NULL,
    object_id text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_object_idx ON gopbx.audit (object_type, object_id);
