-- The PostgreSQL store's schema version 2, as the release before schema 3
-- wrote it (its schema_v0 + migrate_v1 + migrate_v2, and the version row).
-- The tests replace the schema name kms_schema_v2 with one of their own.
CREATE SCHEMA kms_schema_v2;
CREATE TABLE kms_schema_v2.kms_schema_version (version bigint NOT NULL);
CREATE TABLE kms_schema_v2.clients (
    application_id uuid NOT NULL,
    cmid uuid NOT NULL,
    last_seen bigint NOT NULL,
    n_policy bigint NOT NULL,
    PRIMARY KEY (application_id, cmid));
CREATE INDEX clients_by_last_seen ON kms_schema_v2.clients (application_id, last_seen);
CREATE TABLE kms_schema_v2.applications (
    application_id uuid PRIMARY KEY,
    clients bigint NOT NULL CHECK (clients >= 0));
CREATE TABLE kms_schema_v2.activations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time bigint NOT NULL,
    peer text,
    connection_id bigint NOT NULL,
    protocol bigint NOT NULL,
    application_id uuid NOT NULL,
    sku_id uuid NOT NULL,
    kms_id uuid NOT NULL,
    cmid uuid NOT NULL,
    previous_cmid uuid NOT NULL,
    workstation text NOT NULL,
    n_policy bigint NOT NULL,
    client_time bigint NOT NULL,
    virtual_machine boolean NOT NULL,
    license_status bigint NOT NULL,
    minutes_to_expiry bigint NOT NULL,
    count bigint,
    result bigint NOT NULL);
CREATE INDEX activations_by_time ON kms_schema_v2.activations (time);
CREATE TABLE kms_schema_v2.epids (
    csvlk_id uuid PRIMARY KEY,
    epid text NOT NULL);
CREATE INDEX clients_by_n_policy_seen
    ON kms_schema_v2.clients (application_id, n_policy, last_seen);
ALTER TABLE kms_schema_v2.activations ADD COLUMN peer_ip bytea;
CREATE INDEX activations_by_client
    ON kms_schema_v2.activations (application_id, cmid, id);
CREATE INDEX activations_by_application
    ON kms_schema_v2.activations (application_id, id);
INSERT INTO kms_schema_v2.kms_schema_version (version) VALUES (2);
