-- The orchestrator's record of every rule match, one row per (rule, session,
-- session state). The row is written before anything is sent, so a restart
-- resumes or expires what was in flight and never starts the same action
-- twice. status: reported (AUTO_PROGRESS off: nothing sent), pending (not yet
-- sent), sent (a transaction or request may have gone out), executed,
-- failed, expired (not finished within CONSUMPTION_TIMEOUT).
CREATE TABLE pending_actions (
    id          TEXT PRIMARY KEY NOT NULL,
    rule_id     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    action_kind TEXT NOT NULL,
    definition  TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    signature   TEXT NOT NULL DEFAULT '',
    blockhash   TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    UNIQUE (rule_id, session_id, state_key)
);
CREATE INDEX pending_actions_status ON pending_actions (status, expires_at);
