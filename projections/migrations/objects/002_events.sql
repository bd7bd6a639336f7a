-- D23: the objects' metadata and grants become a projection of signed IAM-topic events
-- (ObjectStored, ObjectAccessChanged; projections/objects.py), rebuilt by `pantheon projections
-- rebuild` and compared by `pantheon audit`. What only PostgreSQL holds stays gateway-owned
-- and is never truncated: the upload state (objects.uploads, formerly objects.objects) and the
-- chunks, now sealed under the owner's data key with the SHA-256 of each stored chunk.
ALTER TABLE objects.objects RENAME TO uploads;
ALTER INDEX objects.objects_owner RENAME TO uploads_owner;
ALTER TABLE objects.uploads
    ADD COLUMN data_key_id text,
    ADD COLUMN upload_id   text,
    ADD COLUMN chunk_count int,
    ADD COLUMN chunk_root  bytea;
ALTER TABLE objects.chunks ADD COLUMN digest bytea;

-- Projection of ObjectStored (last event per data id wins).
CREATE TABLE objects.objects (
    data_id        text    PRIMARY KEY,
    owner          text    NOT NULL,
    sha256         bytea   NOT NULL,
    size           bigint  NOT NULL,
    content_type   text    NOT NULL,
    metadata       text    NOT NULL,
    data_key_id    text    NOT NULL,
    upload_id      text    NOT NULL,
    chunk_count    int     NOT NULL,
    chunk_root     bytea   NOT NULL,
    anchor_tx      bytea   NOT NULL,
    anchor_height  bigint  NOT NULL,
    mac            bytea   NOT NULL,
    event_id       text    NOT NULL,
    stored_at_ms   bigint  NOT NULL,
    actor          text    NOT NULL
);
CREATE INDEX objects_by_owner ON objects.objects (owner, data_id);

-- Projection of ObjectAccessChanged: who besides the owner may read (user id or group:<name>).
CREATE TABLE objects.grants (
    data_id        text    NOT NULL,
    subject        text    NOT NULL,
    upload_id      text    NOT NULL,
    mac            bytea   NOT NULL,
    granted_by     text    NOT NULL,
    granted_at_ms  bigint  NOT NULL,
    PRIMARY KEY (data_id, subject)
);
