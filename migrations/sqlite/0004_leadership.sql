-- Which replica leads (written by the leader when it takes the lead; the
-- lock itself is a PostgreSQL advisory lock, not this row).
CREATE TABLE leadership (
    id         INTEGER PRIMARY KEY NOT NULL,
    replica_id TEXT NOT NULL,
    since      BIGINT NOT NULL
);
