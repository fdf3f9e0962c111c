//! Chain-derived records written many to a transaction: what a
//! reconciliation pass brings is stored (its events appended in order)
//! with one commit per batch instead of one per record.

use super::{
    entities::{AccountRecord, AccountRequestRecord, ConsumptionRecord, SessionRecord},
    error::StoreResult,
    Store, WriteTx,
};

/// One chain-derived record to write (the monitor's and the builder's).
#[derive(Debug, Clone, PartialEq)]
pub enum ChainWrite {
    /// An AccountRequest record.
    Request(AccountRequestRecord),
    /// An Account record.
    Account(AccountRecord),
    /// A Session record.
    Session(SessionRecord),
    /// A SessionConsumption record.
    Consumption(ConsumptionRecord),
}

impl Store {
    /// Writes one record in its own transaction; whether it changed anything.
    pub async fn write_chain(&self, write: &ChainWrite) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = self.write_chain_in(&mut tx, write).await;
        self.finish(tx, changed).await
    }

    /// Writes `writes` in order in one transaction; how many changed
    /// anything. All or nothing: after an error nothing of the batch is
    /// stored, and the caller writes them one by one to find the culprit.
    pub async fn write_chain_batch(&self, writes: &[ChainWrite]) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        let mut changed = Ok(0);
        for write in writes {
            changed = match self.write_chain_in(&mut tx, write).await {
                Ok(one) => changed.map(|n| n + usize::from(one)),
                Err(e) => Err(e),
            };
            if changed.is_err() {
                break;
            }
        }
        self.finish(tx, changed).await
    }

    async fn write_chain_in(&self, tx: &mut WriteTx<'_>, write: &ChainWrite) -> StoreResult<bool> {
        match write {
            ChainWrite::Request(r) => self.upsert_account_request_in(tx, r).await,
            ChainWrite::Account(a) => self.upsert_account_in(tx, a).await,
            ChainWrite::Session(s) => self.upsert_session_in(tx, s).await,
            ChainWrite::Consumption(c) => self.record_consumption_in(tx, c).await,
        }
    }
}
