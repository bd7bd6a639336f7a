-- Key history (D21): one row per key and final height at which it appeared or its
-- institution, role, public key or activity changed (nonce moves are not rows). Readers of
-- signed IAM events ask "was this key an active SERVICE key of X after height h?".
CREATE TABLE chain.key_activity (
    key_id         bytea   NOT NULL,
    height         bigint  NOT NULL,
    institution_id text    NOT NULL,
    role           text    NOT NULL,
    active         boolean NOT NULL,
    public_key     bytea   NOT NULL,
    PRIMARY KEY (key_id, height)
);
-- A database projected before this table existed: each key's current state, from the height
-- of its last change (later than the truth, so never more permissive; the audit reports the
-- difference and `pantheon projections rebuild` derives the exact history).
INSERT INTO chain.key_activity (key_id, height, institution_id, role, active, public_key)
    SELECT key_id, updated_height, institution_id, role, active, public_key FROM chain.keys;
