-- The request whose account the builder noted: looked up for every
-- account the monitor records (it was a full scan per account: cost
-- accounts x requests).
CREATE INDEX account_requests_account ON account_requests (account_id);
-- ListSessions by namespace.
CREATE INDEX sessions_namespace ON sessions (namespace, created_at);
