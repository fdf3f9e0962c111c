//! PostgreSQL specifics: migrations, the event-append lock and LISTEN/NOTIFY.

use sqlx::AnyPool;

/// Run on every pooled connection. A transaction left open by a frozen
/// process (SIGSTOP, a stalled VM) would hold its shard lease row's shared
/// lock and keep a successor from taking over; the server ends it instead.
pub const CONNECTION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '5s'";

/// Channel on which every commit that appends events notifies, so that
/// subscribers of every replica wake up promptly.
pub const EVENTS_CHANNEL: &str = "valence_lifecycle_events";

/// Transaction-scoped advisory lock taken before appending events. Holding
/// it until commit makes commit order equal sequence order, so a reader
/// following `sequence > cursor` can never skip an event that commits late.
pub const EVENT_APPEND_LOCK: &str = "SELECT pg_advisory_xact_lock(7746001)";

/// Transaction-scoped advisory lock on one entity id (two-int4 key space,
/// apart from the event lock). Writers of the same entity (the monitor,
/// the builder, an RPC, another replica) take turns, so "read, then insert
/// if missing" cannot race into a duplicate key.
pub const ENTITY_LOCK: &str = "SELECT pg_advisory_xact_lock(7746002, hashtext($1))";

/// Applies migrations.
pub async fn migrate(pool: &AnyPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations/postgres").run(pool).await?;
    Ok(())
}
