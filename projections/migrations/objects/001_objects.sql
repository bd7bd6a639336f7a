-- The data access proxy's off-chain object store (gateway-owned, not a projection: a rebuild
-- never touches it; back it up with the database). Objects are written by the gateway in one
-- transaction: the row (status 'uploading', invisible to others until commit), its chunks,
-- then hash, size and status 'pending'; once the AnchorData receipt is OK, status 'anchored'
-- with the anchor's tx id and height. Anchored objects are never updated.
CREATE SCHEMA IF NOT EXISTS objects;

CREATE TABLE objects.objects (
    data_id       text        PRIMARY KEY,
    sha256        bytea       CHECK (sha256 IS NULL OR length(sha256) = 32),
    size          bigint      NOT NULL DEFAULT 0 CHECK (size >= 0),
    content_type  text        NOT NULL,
    metadata      text        NOT NULL DEFAULT '',
    owner         text        NOT NULL,
    groups        text[]      NOT NULL DEFAULT '{}',
    grants        text[]      NOT NULL DEFAULT '{}',
    status        text        NOT NULL CHECK (status IN ('uploading', 'pending', 'anchored')),
    tx_id         bytea,
    height        bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    anchored_at   timestamptz,
    CHECK (status = 'uploading' OR sha256 IS NOT NULL),
    CHECK (status <> 'anchored' OR (tx_id IS NOT NULL AND height IS NOT NULL))
);

CREATE INDEX objects_owner ON objects.objects (owner, data_id);

-- Content in chunks of at most 1 MiB (seq 0, 1, ...): written and read as a stream, never as
-- one value. EXTERNAL storage: TOASTed uncompressed (objects are often compressed already).
CREATE TABLE objects.chunks (
    data_id text  NOT NULL REFERENCES objects.objects (data_id) ON DELETE CASCADE,
    seq     int   NOT NULL CHECK (seq >= 0),
    chunk   bytea NOT NULL,
    PRIMARY KEY (data_id, seq)
);
ALTER TABLE objects.chunks ALTER COLUMN chunk SET STORAGE EXTERNAL;
