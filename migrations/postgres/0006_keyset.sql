-- Keyset paging: ListAccounts, ListAccountRequests and ListSessions read
-- `ORDER BY created_at DESC, id DESC` from the key a page token carries
-- (`(created_at, id) < ($n, $m)`), total because ids are unique. Every
-- filter those lists take has an index ending in (created_at, id), so a
-- page is one range scan, never a sort; the older (x, created_at) indexes
-- are replaced by their (x, created_at, id) extensions.
DROP INDEX account_requests_status;
CREATE INDEX account_requests_status ON account_requests (status, created_at, id);
CREATE INDEX account_requests_created ON account_requests (created_at, id);

DROP INDEX accounts_owner;
CREATE INDEX accounts_owner ON accounts (owner, created_at, id);
CREATE INDEX accounts_created ON accounts (created_at, id);

DROP INDEX sessions_live;
CREATE INDEX sessions_live ON sessions (is_consumed, created_at, id);
DROP INDEX sessions_namespace;
CREATE INDEX sessions_namespace ON sessions (namespace, created_at, id);
CREATE INDEX sessions_owner ON sessions (owner, created_at, id);
CREATE INDEX sessions_created ON sessions (created_at, id);
