-- Least privilege. The login roles themselves (with their SCRAM verifiers) are made
-- by the postgres state before migrations run; here each gets only what it needs.
--   kamailio       reads accounts, domains, dispatcher, trusted addresses; writes registrations and dialogs
--   gopbx_api      writes tenants, extensions and their Kamailio rows; reads nodes and shards
--   gopbx_salt     writes nodes, dispatcher membership, sets and shard assignments
--   gopbx_metrics  reads server statistics only (pg_monitor)

REVOKE ALL ON DATABASE gopbx FROM PUBLIC;
GRANT CONNECT ON DATABASE gopbx TO kamailio, gopbx_api, gopbx_salt, gopbx_metrics;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA gopbx TO gopbx_api, gopbx_salt;

GRANT SELECT ON version, subscriber, domain, domain_attrs, dispatcher, address, trusted, htable TO kamailio;
GRANT SELECT, INSERT, UPDATE, DELETE ON location, location_attrs, dialog, dialog_vars TO kamailio;
GRANT USAGE ON SEQUENCE location_id_seq, location_attrs_id_seq, dialog_id_seq, dialog_vars_id_seq TO kamailio;

GRANT SELECT, INSERT, UPDATE, DELETE ON gopbx.tenants, gopbx.extensions, gopbx.shard_assignments TO gopbx_api;
GRANT SELECT ON gopbx.nodes, gopbx.dispatcher_sets, gopbx.audit TO gopbx_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON subscriber, domain, domain_attrs TO gopbx_api;
GRANT SELECT ON location, dialog, dispatcher TO gopbx_api;
GRANT USAGE ON SEQUENCE gopbx.tenants_id_seq, gopbx.extensions_id_seq, subscriber_id_seq, domain_id_seq,
    domain_attrs_id_seq TO gopbx_api;

GRANT SELECT, INSERT, UPDATE, DELETE ON gopbx.nodes, gopbx.dispatcher_sets, gopbx.shard_assignments, dispatcher
    TO gopbx_salt;
GRANT SELECT ON gopbx.tenants, gopbx.extensions, gopbx.audit, location, dialog TO gopbx_salt;
GRANT USAGE ON SEQUENCE gopbx.nodes_id_seq, dispatcher_id_seq TO gopbx_salt;

GRANT INSERT ON gopbx.audit TO gopbx_api, gopbx_salt;
GRANT USAGE ON SEQUENCE gopbx.audit_id_seq TO gopbx_api, gopbx_salt;

GRANT pg_monitor TO gopbx_metrics;
