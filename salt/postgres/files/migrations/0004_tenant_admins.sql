-- Tenant administrators: API logins limited to their own tenant (PBKDF2 hashes only).
CREATE TABLE gopbx.tenant_admins (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES gopbx.tenants (id) ON DELETE CASCADE,
    username text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 128),
    password_hash text NOT NULL CHECK (password_hash LIKE 'pbkdf2_sha256$%'),
    created_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON gopbx.tenant_admins TO gopbx_api;
GRANT USAGE ON SEQUENCE gopbx.tenant_admins_id_seq TO gopbx_api;
