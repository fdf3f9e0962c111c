-- Events decoded from transaction logs, by (signature, position in the
-- transaction): the same transaction seen twice appends nothing the second time.
CREATE TABLE chain_log_events (
    signature   TEXT NOT NULL,
    event_index INTEGER NOT NULL,
    slot        INTEGER,
    PRIMARY KEY (signature, event_index)
);
