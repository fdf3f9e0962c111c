//! SQLite specifics: file creation, WAL, per-connection pragmas, migrations.

use sqlx::AnyPool;

/// Run on every new connection: wait for the writer instead of failing,
/// and enforce foreign keys.
pub const CONNECTION_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";

/// Adds `mode=rwc` so a missing database file is created.
pub fn connect_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// WAL (readers never block the writer; persistent in the file), then migrations.
pub async fn migrate(pool: &AnyPool) -> anyhow::Result<()> {
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(pool)
        .await?;
    sqlx::migrate!("../migrations/sqlite").run(pool).await?;
    Ok(())
}
