-- Signed IAM events (D21): every accepted event, by id, with the key that signed it and the
-- height at which that key was checked. Replays of an accepted event_id are refused, and
-- max(key_height) is the topic's mark (a key revoked at or below it can no longer write).
-- A projection table: a rebuild truncates it with the others.
CREATE TABLE IF NOT EXISTS iam_events (
    event_id   text   PRIMARY KEY,
    "offset"   bigint NOT NULL,
    key_id     bytea  NOT NULL,
    key_height bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS iam_events_key_height ON iam_events (key_height DESC);
