//! Which replica leads: the row the leader writes when it takes the lead,
//! and the LeadershipChanged events.

use sqlx::Row as _;
use valence_lifecycle_api::v1::{lifecycle_event::Payload, LeadershipChanged};

use super::error::StoreResult;
use super::{NewEvent, Store};

impl Store {
    /// Records that `replica_id` leads since `since_ms` and appends
    /// LeadershipChanged.
    pub async fn record_leader(
        &self,
        replica_id: &str,
        since_ms: i64,
        reason: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO leadership (id, replica_id, since) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET replica_id = excluded.replica_id, since = excluded.since",
        )
        .bind(replica_id)
        .bind(since_ms)
        .execute(tx.conn())
        .await?;
        let payload = Payload::LeadershipChanged(LeadershipChanged {
            replica_id: replica_id.to_string(),
            leader: true,
            reason: reason.to_string(),
        });
        self.append_event(&mut tx, NewEvent::new(replica_id, payload))
            .await?;
        self.commit(tx).await
    }

    /// Appends LeadershipChanged for a replica that stopped leading.
    pub async fn record_step_down(&self, replica_id: &str, reason: &str) -> StoreResult<()> {
        let payload = Payload::LeadershipChanged(LeadershipChanged {
            replica_id: replica_id.to_string(),
            leader: false,
            reason: reason.to_string(),
        });
        self.append_events(vec![NewEvent::new(replica_id, payload)])
            .await?;
        Ok(())
    }

    /// The replica that last took the lead, and since when (Unix ms).
    pub async fn current_leader(&self) -> StoreResult<Option<(String, i64)>> {
        let row = sqlx::query("SELECT replica_id, since FROM leadership WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("replica_id")?, r.try_get("since")?)),
            None => None,
        })
    }
}
