//! PostgreSQL specifics: migrations, the event-append lock and LISTEN/NOTIFY.

use sqlx::AnyPool;

/// Channel on which every commit that appends events notifies, so that
/// subscribers of every replica wake up promptly.
pub const EVENTS_CHANNEL: &str = "valence_lifecycle_events";

/// Transaction-scoped advisory lock taken before appending events. Holding
/// it until commit makes commit order equal sequence order, so a reader
/// following `sequence > cursor` can never skip an event that commits late.
pub const EVENT_APPEND_LOCK: &str = "SELECT pg_advisory_xact_lock(7746001)";

/// Applies migrations.
pub async fn migrate(pool: &AnyPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations/postgres").run(pool).await?;
    Ok(())
}
