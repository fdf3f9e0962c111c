//! The lifecycle event log: appended inside the transaction of the change it
//! describes, read by cursor (subscribers, tailer) or by page (ListEvents).

use prost::Message as _;
use sqlx::Row as _;
use valence_lifecycle_api::v1::{lifecycle_event::Payload, EventType, LifecycleEvent};

use super::error::StoreResult;
use super::event_types::{entities_of, event_type_of};
use super::rows::value_rows;
use super::{now_ms, postgres, timestamp, Backend, Store, WriteTx};

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What happened.
    pub payload: Payload,
    /// The entity it is about.
    pub entity_id: String,
    /// Namespace of the session involved, if any.
    pub namespace: String,
    /// Chain slot, when the event comes from the chain.
    pub slot: Option<u64>,
    /// Transaction signature, when known.
    pub signature: String,
}

impl NewEvent {
    /// An event about `entity_id` with no chain context.
    pub fn new(entity_id: impl Into<String>, payload: Payload) -> Self {
        NewEvent {
            payload,
            entity_id: entity_id.into(),
            namespace: String::new(),
            slot: None,
            signature: String::new(),
        }
    }

    /// Sets the namespace.
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets chain context.
    pub fn on_chain(mut self, slot: Option<u64>, signature: impl Into<String>) -> Self {
        self.slot = slot;
        self.signature = signature.into();
        self
    }
}

/// Filters of a page query.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this type.
    pub event_type: Option<EventType>,
    /// Only this entity.
    pub entity_id: Option<String>,
    /// Only events of this shard (program id).
    pub shard: Option<String>,
}

const COLUMNS: &str = "sequence, created_at, payload";

/// Rows of one multi-row INSERT into the log: 8 parameters each, well
/// under SQLite's 32,766 and PostgreSQL's 65,535 per statement.
const EVENTS_PER_STATEMENT: usize = 500;

impl Store {
    /// Appends an event inside `tx`; returns its sequence.
    pub(crate) async fn append_event(
        &self,
        tx: &mut WriteTx<'_>,
        event: NewEvent,
    ) -> StoreResult<u64> {
        let sequences = self.append_events_in(tx, vec![event]).await?;
        Ok(sequences.first().copied().unwrap_or_default())
    }

    /// Appends `events` in order inside `tx`, many to a statement (ingest
    /// appends thousands); returns their sequences in the same order.
    pub(crate) async fn append_events_in(
        &self,
        tx: &mut WriteTx<'_>,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<u64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // The lock (held to commit) and the wake-up (delivered at commit)
        // are needed once per transaction, however many events it appends.
        let first = !tx.appended_events;
        if self.backend == Backend::Postgres && first {
            sqlx::query(postgres::EVENT_APPEND_LOCK)
                .execute(tx.conn())
                .await?;
        }
        let mut sequences = Vec::with_capacity(events.len());
        let mut others: Vec<(String, i64)> = Vec::new();
        let mut rest = events;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(EVENTS_PER_STATEMENT));
            let chunk = std::mem::replace(&mut rest, tail);
            let appended = self.insert_events(tx, chunk, &mut others).await?;
            sequences.extend(appended.into_iter().map(|s| s as u64));
        }
        for chunk in others.chunks(EVENTS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO event_entities (entity_id, sequence) VALUES {}",
                value_rows(self.backend, chunk.len(), 2)
            );
            let mut insert = sqlx::query(&sql);
            for (entity, sequence) in chunk {
                insert = insert.bind(entity.clone()).bind(*sequence);
            }
            insert.execute(tx.conn()).await?;
        }
        if self.backend == Backend::Postgres && first {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(postgres::EVENTS_CHANNEL)
                .bind(sequences.last().copied().unwrap_or_default().to_string())
                .execute(tx.conn())
                .await?;
        }
        tx.appended_events = true;
        Ok(sequences)
    }

    /// One multi-row INSERT of `events`; their sequences, in their order.
    /// The other entities each concerns are added to `others` with its
    /// sequence, so the entity filter finds it under each (the log's own
    /// row keeps the first).
    async fn insert_events(
        &self,
        tx: &mut WriteTx<'_>,
        events: Vec<NewEvent>,
        others: &mut Vec<(String, i64)>,
    ) -> StoreResult<Vec<i64>> {
        let sql = format!(
            "INSERT INTO lifecycle_events (event_type, entity_id, namespace, slot, signature, created_at, payload, shard) \
             VALUES {} RETURNING sequence",
            value_rows(self.backend, events.len(), 8)
        );
        let now = now_ms();
        let mut concerns = Vec::with_capacity(events.len());
        let mut insert = sqlx::query(&sql);
        for event in events {
            let event_type = event_type_of(&event.payload);
            concerns.push(
                entities_of(&event.entity_id, &event.payload)
                    .into_iter()
                    .filter(|id| *id != event.entity_id)
                    .collect::<Vec<_>>(),
            );
            let body = LifecycleEvent {
                sequence: 0,
                time: None,
                slot: event.slot,
                signature: event.signature.clone(),
                entity_id: event.entity_id.clone(),
                namespace: event.namespace.clone(),
                event_type: event_type as i32,
                // Derived from the payload when read, never stored twice.
                entity_ids: Vec::new(),
                shard: self.shard_tag().to_string(),
                payload: Some(event.payload),
            };
            insert = insert
                .bind(valence_lifecycle_api::json::short_name::<EventType>(
                    event_type as i32,
                ))
                .bind(event.entity_id)
                .bind(event.namespace)
                .bind(event.slot.map(|s| s as i64))
                .bind(event.signature)
                .bind(now)
                .bind(body.encode_to_vec())
                .bind(self.shard_tag().to_string());
        }
        let rows = insert.fetch_all(tx.conn()).await?;
        let mut sequences = rows
            .iter()
            .map(|row| row.try_get::<i64, _>("sequence"))
            .collect::<Result<Vec<_>, _>>()?;
        // Rows take their sequences in VALUES order on both backends (and
        // the append lock or SQLite's one writer keeps anyone else's out of
        // the range); RETURNING promises no order, so sort to match.
        sequences.sort_unstable();
        for (ids, sequence) in concerns.into_iter().zip(&sequences) {
            others.extend(ids.into_iter().map(|id| (id, *sequence)));
        }
        Ok(sequences)
    }

    /// Appends events in their own transaction (for events that describe no
    /// table change, such as component status changes).
    pub async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<u64>> {
        let mut tx = self.begin().await?;
        let mut sequences = Vec::with_capacity(events.len());
        for event in events {
            sequences.push(self.append_event(&mut tx, event).await?);
        }
        self.commit(tx).await?;
        Ok(sequences)
    }

    /// Events with a sequence above `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<LifecycleEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM lifecycle_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
        ))
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    /// A page of events, newest first (seed 000's limit/offset), or oldest
    /// first after a cursor.
    pub async fn list_events(
        &self,
        query: &EventQuery,
        after: Option<u64>,
        limit: u32,
        offset: u64,
    ) -> StoreResult<Vec<LifecycleEvent>> {
        let mut sql = format!("SELECT {COLUMNS} FROM lifecycle_events WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if query.event_type.is_some() {
            sql += &format!(" AND event_type = {}", next());
        }
        if query.entity_id.is_some() {
            let (own, other) = (next(), next());
            sql += &format!(
                " AND (entity_id = {own} OR sequence IN \
                 (SELECT sequence FROM event_entities WHERE entity_id = {other}))"
            );
        }
        if query.shard.is_some() {
            sql += &format!(" AND shard = {}", next());
        }
        if after.is_some() {
            sql += &format!(
                " AND sequence > {} ORDER BY sequence ASC LIMIT {}",
                next(),
                next()
            );
        } else {
            sql += &format!(" ORDER BY sequence DESC LIMIT {} OFFSET {}", next(), next());
        }
        let mut q = sqlx::query(&sql);
        if let Some(t) = query.event_type {
            q = q.bind(valence_lifecycle_api::json::short_name::<EventType>(
                t as i32,
            ));
        }
        if let Some(e) = &query.entity_id {
            q = q.bind(e.clone()).bind(e.clone());
        }
        if let Some(shard) = &query.shard {
            q = q.bind(shard.clone());
        }
        q = match after {
            Some(a) => q.bind(a as i64).bind(limit as i64),
            None => q.bind(limit as i64).bind(offset as i64),
        };
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(decode_event).collect()
    }

    /// Highest sequence in the log (0 when empty).
    pub async fn head_sequence(&self) -> StoreResult<u64> {
        self.scalar_u64("SELECT COALESCE(MAX(sequence), 0) FROM lifecycle_events")
            .await
    }

    /// The log's bounds, (head, oldest), in one round trip. Two scalar
    /// subqueries, because SQLite answers MIN or MAX from the index only
    /// when it is the query's single aggregate.
    pub async fn log_bounds(&self) -> StoreResult<(u64, u64)> {
        let row = sqlx::query(
            "SELECT COALESCE((SELECT MAX(sequence) FROM lifecycle_events), 0), \
                    COALESCE((SELECT MIN(sequence) FROM lifecycle_events), 0)",
        )
        .fetch_one(&self.pool)
        .await?;
        let (head, oldest): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok((head.max(0) as u64, oldest.max(0) as u64))
    }

    /// Lowest retained sequence (0 when empty).
    pub async fn oldest_sequence(&self) -> StoreResult<u64> {
        self.scalar_u64("SELECT COALESCE(MIN(sequence), 0) FROM lifecycle_events")
            .await
    }

    /// Deletes events older than `max_age_ms` or beyond the newest
    /// `max_count` (0 disables either), but never the newest event, so the
    /// head sequence survives pruning. Returns how many were deleted.
    pub async fn prune_events(&self, max_age_ms: u64, max_count: u64) -> StoreResult<u64> {
        let head = self.head_sequence().await?;
        if head == 0 {
            return Ok(0);
        }
        let mut deleted = 0;
        if max_count > 0 && head > max_count {
            deleted += sqlx::query("DELETE FROM lifecycle_events WHERE sequence <= $1")
                .bind((head - max_count) as i64)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if max_age_ms > 0 {
            deleted +=
                sqlx::query("DELETE FROM lifecycle_events WHERE created_at < $1 AND sequence < $2")
                    .bind(now_ms() - max_age_ms as i64)
                    .bind(head as i64)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
        }
        if deleted > 0 {
            sqlx::query(
                "DELETE FROM event_entities WHERE sequence < \
                 (SELECT COALESCE(MIN(sequence), 0) FROM lifecycle_events)",
            )
            .execute(&self.pool)
            .await?;
        }
        Ok(deleted)
    }

    pub(crate) async fn scalar_u64(&self, sql: &str) -> StoreResult<u64> {
        let row = sqlx::query(sql).fetch_one(&self.pool).await?;
        let value: i64 = row.try_get(0)?;
        Ok(value.max(0) as u64)
    }
}

fn decode_event(row: &sqlx::any::AnyRow) -> StoreResult<LifecycleEvent> {
    let sequence: i64 = row.try_get("sequence")?;
    let created_at: i64 = row.try_get("created_at")?;
    let payload: Vec<u8> = row.try_get("payload")?;
    let mut event = LifecycleEvent::decode(payload.as_slice())
        .map_err(|e| anyhow::anyhow!("event {sequence} does not decode: {e}"))?;
    event.sequence = sequence as u64;
    event.time = Some(timestamp(created_at));
    if let Some(payload) = &event.payload {
        event.entity_ids = entities_of(&event.entity_id, payload);
    }
    Ok(event)
}
