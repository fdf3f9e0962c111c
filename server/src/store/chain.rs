//! What the monitor records that is not an entity: events decoded from
//! transaction logs, each exactly once.

use super::error::StoreResult;
use super::{NewEvent, Store, WriteTx};

impl Store {
    /// Appends `event`, decoded from transaction `signature` at position
    /// `index`, unless that (signature, index) was recorded before.
    /// Returns whether it was appended.
    pub async fn record_chain_event(
        &self,
        signature: &str,
        index: u32,
        event: NewEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let appended = self
            .record_chain_event_in(&mut tx, signature, index, event)
            .await;
        self.finish(tx, appended).await
    }

    pub(super) async fn record_chain_event_in(
        &self,
        tx: &mut WriteTx<'_>,
        signature: &str,
        index: u32,
        event: NewEvent,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO chain_log_events (signature, event_index, slot) VALUES ($1, $2, $3) \
             ON CONFLICT (signature, event_index) DO NOTHING",
        )
        .bind(signature)
        .bind(index as i64)
        .bind(event.slot.map(|s| s as i64))
        .execute(tx.conn())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        self.append_event(tx, event).await?;
        Ok(true)
    }
}
