-- Layer 2 (DESIGN.md section 8), written by the batcher (streams/batcher.py) of an institution
-- in its own database, beside the chain tables. Everything lives in schema "l2". Rows of one
-- sealed batch (batch, leaves, device sequences, rejected records, consumer positions) are
-- written in ONE transaction, so a crash leaves either all of them or none.

CREATE SCHEMA IF NOT EXISTS l2;

-- Next offset to read per input partition, per batcher consumer group.
CREATE TABLE l2.positions (
    consumer    text   NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (consumer, topic, partition)
);

-- A batch is 'sealed' (stored, CommitBatch not yet confirmed) then 'committed' (a receipt
-- OK or ALREADY_EXISTS arrived). The root is never submitted before the batch is sealed.
CREATE TABLE l2.batches (
    batch_id        text     PRIMARY KEY,
    seq             bigserial UNIQUE,
    consumer        text     NOT NULL,
    topic           text     NOT NULL,
    partition       int      NOT NULL,
    first_offset    bigint   NOT NULL,
    last_offset     bigint   NOT NULL,
    merkle_root     bytea    NOT NULL,
    leaf_count      int      NOT NULL CHECK (leaf_count > 0),
    record_count    bigint   NOT NULL,
    window_start_ms bigint   NOT NULL,
    window_end_ms   bigint   NOT NULL,
    state           text     NOT NULL CHECK (state IN ('sealed', 'committed')),
    sealed_at       timestamptz NOT NULL DEFAULT now(),
    tx_id           bytea,
    result_code     smallint,
    committed_at    timestamptz
);
CREATE INDEX batches_sealed ON l2.batches (seq) WHERE state = 'sealed';

-- One row per Merkle leaf: a DeviceRecord (kind 0) or a DeviceBundle (kind 1), canonical bytes.
-- (device_key_id, first_sequence) is unique: a reading can never be in two batches.
CREATE TABLE l2.leaves (
    batch_id       text     NOT NULL REFERENCES l2.batches (batch_id),
    leaf_index     int      NOT NULL,
    device_key_id  bytea    NOT NULL,
    first_sequence bigint   NOT NULL,
    last_sequence  bigint   NOT NULL,
    kind           smallint NOT NULL,
    leaf           bytea    NOT NULL,
    PRIMARY KEY (batch_id, leaf_index)
);
CREATE UNIQUE INDEX leaves_device ON l2.leaves (device_key_id, first_sequence);

-- Last accepted sequence per device (replay protection), updated with the batch.
CREATE TABLE l2.device_sequences (
    device_key_id bytea  PRIMARY KEY,
    last_sequence bigint NOT NULL
);

-- Rejected messages (outbox of <prefix>l2.rejected): written with the batch, published after.
CREATE TABLE l2.rejected (
    topic         text    NOT NULL,
    partition     int     NOT NULL,
    "offset"      bigint  NOT NULL,
    reason        text    NOT NULL,
    device_key_id bytea   NOT NULL,
    sequence      bigint  NOT NULL,
    raw           bytea   NOT NULL,
    published     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX rejected_unpublished ON l2.rejected (topic, partition, "offset") WHERE NOT published;
