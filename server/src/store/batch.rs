//! Chain-derived records written many to a transaction: what a
//! reconciliation pass brings is stored (its events appended in order)
//! with one commit per batch instead of one per record.

use std::collections::HashSet;

use sqlx::Row as _;

use super::{
    entities::{
        created_event, initialized_event, requested_event, AccountRecord, AccountRequestRecord,
        ConsumptionRecord, FirstStep, SessionRecord,
    },
    error::StoreResult,
    factory::ReservationRecord,
    rows::list_marks,
    Store, WriteTx,
};

/// Ids per existence query (five IN lists of them).
const IDS_PER_STATEMENT: usize = 1000;

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
    /// A SessionReservation record (seed 001's session factory).
    Reservation(ReservationRecord),
}

impl Store {
    /// Writes one record in its own transaction; whether it changed anything.
    pub async fn write_chain(&self, write: &ChainWrite) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = self.write_chain_in(&mut tx, write).await;
        self.finish(tx, changed).await
    }

    /// Writes `writes` in one transaction; how many changed anything. All
    /// or nothing: after an error nothing of the batch is stored, and the
    /// caller writes them one by one to find the culprit.
    ///
    /// Records new to the store that need nothing but inserting (most of
    /// what a catch-up brings) go first, a few multi-row statements for
    /// all of them; the rest follow in order, one by one. Each entity's
    /// events keep their order; records of one batch are independent
    /// accounts of the program, which the chain holds in no order anyway.
    pub async fn write_chain_batch(&self, writes: &[ChainWrite]) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        let changed = self.write_chain_batch_in(&mut tx, writes).await;
        self.finish(tx, changed).await
    }

    async fn write_chain_batch_in(
        &self,
        tx: &mut WriteTx<'_>,
        writes: &[ChainWrite],
    ) -> StoreResult<usize> {
        let (fresh, rest) = self.split_fresh(tx, writes).await?;
        let mut changed = fresh.len();
        self.insert_fresh(tx, &fresh).await?;
        for write in rest {
            changed += usize::from(self.write_chain_in(tx, write).await?);
        }
        Ok(changed)
    }

    /// Splits `writes` into fresh records (see [`Fresh`]) and the rest,
    /// with one query for the whole batch. On PostgreSQL the fresh ones'
    /// entity locks are taken first, in one statement and in id order.
    async fn split_fresh<'w>(
        &self,
        tx: &mut WriteTx<'_>,
        writes: &'w [ChainWrite],
    ) -> StoreResult<(Vec<Fresh<'w>>, Vec<&'w ChainWrite>)> {
        let mut seen = HashSet::new();
        let (mut candidates, mut rest) = (Vec::new(), Vec::new());
        for write in writes {
            match Fresh::candidate(write) {
                Some(fresh) if seen.insert(fresh.id()) => candidates.push(fresh),
                _ => rest.push(write),
            }
        }
        if candidates.is_empty() {
            return Ok((candidates, rest));
        }
        let mut ids: Vec<&str> = candidates.iter().map(Fresh::id).collect();
        ids.sort_unstable();
        self.lock_entities(tx, &ids).await?;
        let known = self.known_ids(tx, &ids).await?;
        let (fresh, known): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|c| !known.contains(c.id()));
        rest.extend(known.into_iter().map(|c| c.write));
        Ok((fresh, rest))
    }

    /// Which of `ids` the store knows in any way that makes a record more
    /// than an insert: a row of any kind, a progression, or a request that
    /// noted it as the account it initializes. Index lookups only.
    async fn known_ids(&self, tx: &mut WriteTx<'_>, ids: &[&str]) -> StoreResult<HashSet<String>> {
        let mut known = HashSet::new();
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            // Five lists of the same ids, each bound on its own (SQLite's
            // parameters are anonymous: see `rows::value_rows`).
            let n = chunk.len();
            let list = |k: usize| list_marks(self.backend, k * n, n);
            let sql = format!(
                "SELECT id FROM account_requests WHERE id IN ({}) \
                 UNION ALL SELECT account_id FROM account_requests WHERE account_id IN ({}) \
                 UNION ALL SELECT id FROM accounts WHERE id IN ({}) \
                 UNION ALL SELECT id FROM sessions WHERE id IN ({}) \
                 UNION ALL SELECT entity_id FROM linear_progressions WHERE entity_id IN ({})",
                list(0),
                list(1),
                list(2),
                list(3),
                list(4)
            );
            let mut query = sqlx::query(&sql);
            for _ in 0..5 {
                for id in chunk {
                    query = query.bind(id.to_string());
                }
            }
            for row in query.fetch_all(tx.conn()).await? {
                known.insert(row.try_get::<String, _>(0)?);
            }
        }
        Ok(known)
    }

    /// Inserts fresh records: their rows, their first steps and their
    /// events (each record's own, then its StateTransition, in batch
    /// order), a statement per table; then sessions take their accounts.
    async fn insert_fresh(&self, tx: &mut WriteTx<'_>, fresh: &[Fresh<'_>]) -> StoreResult<()> {
        if fresh.is_empty() {
            return Ok(());
        }
        let (mut requests, mut accounts, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
        let mut steps = Vec::with_capacity(fresh.len());
        let mut events = Vec::with_capacity(fresh.len() * 2);
        for record in fresh {
            let (step, event) = match record.write {
                ChainWrite::Request(r) => {
                    requests.push(r);
                    (FirstStep::of_request(r), requested_event(r))
                }
                ChainWrite::Account(a) => {
                    accounts.push(a);
                    (FirstStep::of_account(a), initialized_event(a))
                }
                ChainWrite::Session(s) => {
                    sessions.push(s);
                    (FirstStep::of_session(s), created_event(s))
                }
                ChainWrite::Consumption(_) | ChainWrite::Reservation(_) => {
                    unreachable!("consumptions and reservations are never fresh")
                }
            };
            events.push(event);
            events.push(step.event());
            steps.push(step);
        }
        self.insert_request_rows(tx, &requests).await?;
        self.insert_account_rows(tx, &accounts).await?;
        self.insert_session_rows(tx, &sessions).await?;
        self.insert_first_steps(tx, &steps).await?;
        self.append_events_in(tx, events).await?;
        for s in sessions {
            self.take_into_session(tx, s).await?;
        }
        Ok(())
    }

    async fn write_chain_in(&self, tx: &mut WriteTx<'_>, write: &ChainWrite) -> StoreResult<bool> {
        match write {
            ChainWrite::Request(r) => self.upsert_account_request_in(tx, r).await,
            ChainWrite::Account(a) => self.upsert_account_in(tx, a).await,
            ChainWrite::Session(s) => self.upsert_session_in(tx, s).await,
            ChainWrite::Consumption(c) => self.record_consumption_in(tx, c).await,
            ChainWrite::Reservation(r) => self.upsert_reservation_in(tx, r).await,
        }
    }
}

/// A record that may need nothing but inserting: a request that names no
/// account yet, an account that names no request, a live session. It is
/// fresh when the store knows nothing of its id (see `known_ids`).
struct Fresh<'w> {
    write: &'w ChainWrite,
}

impl<'w> Fresh<'w> {
    fn candidate(write: &'w ChainWrite) -> Option<Self> {
        let simple = match write {
            ChainWrite::Request(r) => r.account_id.is_none(),
            ChainWrite::Account(a) => a.request_id.is_empty(),
            ChainWrite::Session(s) => !s.is_consumed,
            ChainWrite::Consumption(_) | ChainWrite::Reservation(_) => false,
        };
        simple.then_some(Fresh { write })
    }

    fn id(&self) -> &'w str {
        match self.write {
            ChainWrite::Request(r) => &r.id,
            ChainWrite::Account(a) => &a.id,
            ChainWrite::Session(s) => &s.id,
            ChainWrite::Consumption(c) => &c.consumed_session,
            ChainWrite::Reservation(r) => &r.id,
        }
    }
}
