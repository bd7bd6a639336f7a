-- D25: a tombstone per forgotten user, written in the transaction that destroys their data
-- key (gateway/iam/store.py rotate_kek). create_data_key refuses a user with a tombstone, so
-- a token still in flight for a user being forgotten cannot mint a fresh data key before
-- UserForgotten is projected. Gateway-owned (not a projection of the topic): a rebuild keeps it.
CREATE TABLE IF NOT EXISTS iam_forgotten_keys (
    user_id      text        PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now()
);
