-- D46: login throttling counters (gateway/auth/throttle.py) shared by every worker process
-- and replica of one institution's gateway, and kept over restarts. Gateway-owned (not a
-- projection of the topic): a rebuild keeps it. key is the counter's JSON array, e.g.
-- ["pair", login, source]; times are the gateway's clock in seconds.
CREATE TABLE IF NOT EXISTS iam_login_throttle (
    key           text             PRIMARY KEY,
    failures      integer          NOT NULL,
    blocked_until double precision NOT NULL,
    last_seen     double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS iam_login_sources (
    login        text             NOT NULL,
    source       text             NOT NULL,
    last_success double precision NOT NULL,
    PRIMARY KEY (login, source)
);
