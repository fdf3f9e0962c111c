//! Waking up when the event log grows: local commits wake at once (every
//! backend), other replicas' commits arrive by PostgreSQL NOTIFY, and a
//! short poll is the safety net for a lost notification or LISTEN
//! connection. Callers see one `wait` whatever the backend.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use super::{postgres::EVENTS_CHANNEL, Backend, Store};

/// How long connecting the LISTEN connection may take.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Wakes when events may have been appended.
pub struct AppendWatch {
    local: Arc<Notify>,
    listener: Option<sqlx::postgres::PgListener>,
    poll: Duration,
}

impl Store {
    /// A watch on appends to the event log, by this process and (on
    /// PostgreSQL) by other replicas.
    pub async fn watch_appends(&self) -> AppendWatch {
        let (listener, poll) = match self.backend {
            Backend::Postgres => (listen(&self.url).await, Duration::from_millis(500)),
            // One process owns a SQLite file: local commits are all there is.
            Backend::Sqlite => (None, Duration::from_secs(1)),
        };
        AppendWatch {
            local: self.appended(),
            listener,
            poll,
        }
    }
}

impl AppendWatch {
    /// Resolves after a local commit, a NOTIFY or the poll interval,
    /// whichever comes first.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.local.notified() => {}
            _ = wait_notification(&mut self.listener) => {}
            _ = tokio::time::sleep(self.poll) => {}
        }
    }
}

async fn listen(url: &str) -> Option<sqlx::postgres::PgListener> {
    let connect = async {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(listener)) => Some(listener),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "LISTEN failed; other replicas' events arrive by polling");
            None
        }
        Err(_) => {
            tracing::warn!("LISTEN timed out; other replicas' events arrive by polling");
            None
        }
    }
}

/// Resolves on the next NOTIFY; never resolves without a listener. The
/// listener reconnects by itself after a lost connection.
async fn wait_notification(listener: &mut Option<sqlx::postgres::PgListener>) {
    match listener {
        Some(l) => {
            if let Err(e) = l.recv().await {
                tracing::warn!(error = %e, "LISTEN connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        None => std::future::pending().await,
    }
}
