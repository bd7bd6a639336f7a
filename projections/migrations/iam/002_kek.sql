-- D25: data keys are wrapped under a key-encryption key (KEK) kept outside PostgreSQL, in a
-- file sealed by the master key (gateway/iam/kek.py). Forgetting a user re-wraps every other
-- data key under a new KEK and destroys the old KEK file, so the forgotten user's wrapped key
-- left in WAL, dead tuples or dumps is wrapped under a key that no longer exists.

-- The KEK that wraps each data key ('' = the master key itself, rows written before D25).
ALTER TABLE iam_data_keys ADD COLUMN IF NOT EXISTS kek_id text NOT NULL DEFAULT '';

-- Gateway-owned: the id of the institution's current KEK (one row; never its bytes).
CREATE TABLE IF NOT EXISTS iam_kek (
    only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    kek_id     text        NOT NULL,
    rotated_at timestamptz NOT NULL DEFAULT now()
);
