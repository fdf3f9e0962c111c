//! The leader lock (PostgreSQL): a session advisory lock held on a
//! connection of its own. If the leader dies its connection closes and
//! PostgreSQL releases the lock; TCP keepalives bound how long a vanished
//! (not closed) connection keeps it. SQLite needs none: one process owns a
//! file (see [`super::sqlite::ProcessLock`]).
//!
//! Every call returns a boxed future: the election loop's future must be
//! provably Send for the supervisor, and sqlx's `Executor for &mut
//! PgConnection` trips rustc's higher-ranked Send check when such futures
//! are held unboxed across awaits.

use std::{future::Future, pin::Pin};

use sqlx::{Connection as _, PgConnection};

use super::{error::StoreResult, Backend, Store};

/// Key of the leader lock (single-bigint key space; the event and entity
/// locks use other keys).
const LEADER_LOCK_KEY: i64 = 7_746_003;

/// A boxed, Send store future.
pub type LockFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// The dedicated connection that holds (or tries) the leader lock.
pub struct LockConnection {
    conn: PgConnection,
}

impl Store {
    /// Whether this store needs a leader lock: false on SQLite, whose only
    /// server leads for its whole run.
    pub fn needs_leader_lock(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Opens the lock connection, with short keepalives so the server
    /// drops a vanished client (and its lock) within about 5 + 2×3 s
    /// instead of the OS default of hours.
    pub fn open_lock_connection(&self) -> LockFuture<'_, LockConnection> {
        Box::pin(async move {
            let mut conn = PgConnection::connect(&self.url).await?;
            for setting in [
                "SET tcp_keepalives_idle = 5",
                "SET tcp_keepalives_interval = 2",
                "SET tcp_keepalives_count = 3",
            ] {
                if let Err(e) = sqlx::query(setting).execute(&mut conn).await {
                    tracing::debug!(error = %e, setting, "could not set keepalives on the lock connection");
                }
            }
            Ok(LockConnection { conn })
        })
    }
}

impl LockConnection {
    /// Takes the lock if free; whether it is ours now.
    pub fn try_lock(&mut self) -> LockFuture<'_, bool> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK_KEY)
                    .fetch_one(&mut self.conn)
                    .await?,
            )
        })
    }

    /// Answers when the connection (and so the lock) is alive.
    pub fn ping(&mut self) -> LockFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&mut self.conn).await?;
            Ok(())
        })
    }

    /// Releases the lock at once, so a follower need not wait for the
    /// socket to close.
    pub fn unlock(&mut self) -> LockFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LEADER_LOCK_KEY)
                .execute(&mut self.conn)
                .await?;
            Ok(())
        })
    }
}
