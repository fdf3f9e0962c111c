-- The entities an event concerns besides its own (lifecycle_events.entity_id):
-- an AccountInitialized is also about its request, a SessionConsumed about
-- the sessions created from it. The entity filters of ListEvents read both.
-- Rows are written with the event; pruning removes them with it.
CREATE TABLE event_entities (
    entity_id TEXT NOT NULL,
    sequence  BIGINT NOT NULL,
    PRIMARY KEY (entity_id, sequence)
);
CREATE INDEX event_entities_sequence ON event_entities (sequence);

-- Events stored before this migration: an initialization's request, from
-- the account it initialized (the other relations are listed in every
-- event's entity_ids, derived from its payload, but only events appended
-- from now on are found under them by the filters).
INSERT INTO event_entities (entity_id, sequence)
SELECT a.request_id, e.sequence
FROM lifecycle_events e JOIN accounts a ON a.id = e.entity_id
WHERE e.event_type = 'account_initialized' AND a.request_id <> '' AND a.request_id <> e.entity_id;
