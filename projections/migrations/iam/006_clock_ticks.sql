-- D62: the last IAM clock tick of this institution (gateway/iam/clock_tick.py). One row, the
-- broker append time of the IAM message a tick was sent for; every gateway process and CLI
-- of the institution locks it while it decides and sends, so at most one tick is sent per S
-- of broker time. Gateway-owned (not a projection of the topic): a rebuild keeps it.
CREATE TABLE IF NOT EXISTS iam_clock_ticks (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    claimed_ms bigint  NOT NULL
);
INSERT INTO iam_clock_ticks (singleton, claimed_ms) VALUES (true, 0) ON CONFLICT DO NOTHING;
