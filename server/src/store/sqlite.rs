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

/// Exclusive hold on a SQLite database for one server process. SQLite has
/// one writer and this server's event tailer only sees its own commits
/// promptly, so a second server on the same file is refused at start
/// (several replicas need PostgreSQL). Released when dropped.
pub struct ProcessLock {
    _file: std::fs::File,
}

impl ProcessLock {
    /// Takes `<database file>.lock` (created if missing), or explains who
    /// holds it; None for URLs of other backends and in-memory databases.
    pub fn acquire(url: &str) -> anyhow::Result<Option<ProcessLock>> {
        let Some(path) = database_path(url) else {
            return Ok(None);
        };
        let lock_path = format!("{path}.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("opening {lock_path}: {e}"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ProcessLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another valence-lifecycle server is using the SQLite database {path} (it holds {lock_path}); \
                 SQLite serves one server process: stop the other one, or use PostgreSQL (DATABASE_URL=postgres://…) \
                 for several replicas"
            ),
            Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!("locking {lock_path}: {e}")),
        }
    }
}

/// The file path of a `sqlite:` URL (None for in-memory databases).
fn database_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_urls() {
        assert_eq!(
            database_path("sqlite://valence.db").as_deref(),
            Some("valence.db")
        );
        assert_eq!(
            database_path("sqlite:///tmp/x.db?mode=rwc").as_deref(),
            Some("/tmp/x.db")
        );
        assert_eq!(database_path("sqlite::memory:"), None);
    }

    #[test]
    fn a_second_holder_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let first = ProcessLock::acquire(&url).unwrap();
        assert!(first.is_some());
        let err = ProcessLock::acquire(&url)
            .err()
            .expect("second lock refused")
            .to_string();
        assert!(
            err.contains("db.sqlite") && err.contains("PostgreSQL"),
            "{err}"
        );
        drop(first);
        assert!(
            ProcessLock::acquire(&url).unwrap().is_some(),
            "released on drop"
        );
    }
}
