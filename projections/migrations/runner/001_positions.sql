-- Consumer positions of every projection: the next offset to read per topic partition,
-- written in the same transaction as the projection's rows (projections/runner.py).
CREATE TABLE IF NOT EXISTS projection_positions (
    projection  text   NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (projection, topic, partition)
);
