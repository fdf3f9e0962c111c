-- Several shard programs (issue 19). Every chain-derived record, its
-- progression and the events its chain work appends carry the program id of
-- their shard; '' for rows of no shard (rules, singletons, components) and for
-- rows stored before this migration, which the server assigns to the only
-- configured shard at start when there is exactly one.
ALTER TABLE account_requests ADD COLUMN shard TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN shard TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN shard TEXT NOT NULL DEFAULT '';
ALTER TABLE linear_progressions ADD COLUMN shard TEXT NOT NULL DEFAULT '';
ALTER TABLE lifecycle_events ADD COLUMN shard TEXT NOT NULL DEFAULT '';

-- The shard filters of the keyset lists and of ListEvents.
CREATE INDEX account_requests_shard ON account_requests (shard, created_at, id);
CREATE INDEX account_requests_shard_status ON account_requests (shard, status, created_at, id);
CREATE INDEX accounts_shard ON accounts (shard, created_at, id);
CREATE INDEX sessions_shard ON sessions (shard, created_at, id);
CREATE INDEX lifecycle_events_shard ON lifecycle_events (shard, sequence);

-- One lease per shard program: the replica that runs its chain work until
-- expires_at (Unix ms on the database's clock), renewed by heartbeat. epoch
-- grows on every change of owner; every write of the shard's chain work
-- carries the epoch it was granted and is refused once the epoch has moved
-- on (fencing). last_slot and head_slot are what the owner last reported:
-- the highest slot applied, and the chain's slot then.
CREATE TABLE shard_leases (
    shard      TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL DEFAULT '',
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL DEFAULT 0,
    last_slot  BIGINT NOT NULL DEFAULT 0,
    head_slot  BIGINT NOT NULL DEFAULT 0
);

-- Replicas seen recently (heartbeat): how many share the shards.
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY NOT NULL,
    last_seen  BIGINT NOT NULL
);
