-- Initial schema (PostgreSQL). Times are Unix milliseconds; lists are JSON text.

CREATE TABLE account_requests (
    id              TEXT PRIMARY KEY NOT NULL,
    owner           TEXT NOT NULL,
    capabilities    TEXT NOT NULL,
    init_state_hash TEXT NOT NULL,
    status          TEXT NOT NULL,
    failure_reason  TEXT NOT NULL DEFAULT '',
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    signature       TEXT NOT NULL DEFAULT '',
    account_id      TEXT NOT NULL DEFAULT '',
    slot            BIGINT
);
CREATE INDEX account_requests_status ON account_requests (status, created_at);

CREATE TABLE accounts (
    id           TEXT PRIMARY KEY NOT NULL,
    owner        TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    state_hash   TEXT NOT NULL,
    is_active    BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    state        TEXT NOT NULL,
    request_id   TEXT NOT NULL DEFAULT '',
    slot         BIGINT
);
CREATE INDEX accounts_owner ON accounts (owner, created_at);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY NOT NULL,
    owner            TEXT NOT NULL,
    accounts         TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    is_consumed      BOOLEAN NOT NULL,
    nonce            BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    metadata         BYTEA NOT NULL,
    state            TEXT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    consumed_at      BIGINT,
    slot             BIGINT
);
CREATE INDEX sessions_live ON sessions (is_consumed, created_at);

CREATE TABLE session_consumptions (
    consumed_session      TEXT PRIMARY KEY NOT NULL,
    created_sessions      TEXT NOT NULL,
    transaction_signature TEXT NOT NULL,
    consumed_at           BIGINT NOT NULL,
    slot                  BIGINT
);

CREATE TABLE linear_progressions (
    entity_id     TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    current_state TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE progression_transitions (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id  TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    at         BIGINT NOT NULL,
    slot       BIGINT,
    signature  TEXT NOT NULL DEFAULT '',
    reason     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX progression_transitions_entity ON progression_transitions (entity_id, id);

-- An identity column never hands a pruned sequence number out again, so a
-- subscriber's cursor stays meaningful forever.
CREATE TABLE lifecycle_events (
    sequence   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    namespace  TEXT NOT NULL DEFAULT '',
    slot       BIGINT,
    signature  TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    payload    BYTEA NOT NULL
);
CREATE INDEX lifecycle_events_type ON lifecycle_events (event_type, sequence);
CREATE INDEX lifecycle_events_entity ON lifecycle_events (entity_id, sequence);
CREATE INDEX lifecycle_events_time ON lifecycle_events (created_at);

CREATE TABLE progression_rules (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    definition TEXT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE singletons (
    kind              TEXT PRIMARY KEY NOT NULL,
    status            TEXT NOT NULL,
    program_id        TEXT NOT NULL DEFAULT '',
    version           BIGINT NOT NULL DEFAULT 0,
    config_json       TEXT NOT NULL DEFAULT '',
    updated_at        BIGINT NOT NULL,
    last_signature    TEXT NOT NULL DEFAULT '',
    operations_total  BIGINT NOT NULL DEFAULT 0,
    failures_total    BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT NOT NULL DEFAULT '',
    last_operation_at BIGINT
);

CREATE TABLE singleton_config_versions (
    kind        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    signature   TEXT NOT NULL DEFAULT '',
    config_json TEXT NOT NULL,
    PRIMARY KEY (kind, version)
);
