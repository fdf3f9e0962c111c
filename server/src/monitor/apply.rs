//! Applying what the chain says to the store, idempotently.

use std::{hash::BuildHasher as _, time::Instant};

use solana_sdk::pubkey::Pubkey;

use super::{Monitor, Source};
use crate::{
    chain::codec::{self, base58, DecodeError, Record},
    store::{
        AccountRecord, AccountRequestRecord, ChainWrite, ConsumptionRecord, LinearState,
        ReservationRecord, SessionRecord, StoreError,
    },
    telemetry::metrics::{DecodeLabels, EventTypeLabels, QueueLabels, SourceLabels},
};

/// What an account's data asks of the store (see [`Monitor::prepare`]).
pub(super) enum Prepared {
    /// Nothing: unchanged since last applied, or not written yet.
    Unchanged,
    /// Undecodable: counted and logged, nothing to store.
    Counted,
    /// A record to store.
    Write(Box<Pending>),
}

/// A decoded record waiting to be stored, with what to remember once it is.
pub(super) struct Pending {
    key: Pubkey,
    fingerprint: u64,
    slot: u64,
    source: Source,
    write: ChainWrite,
    /// Not seen by this process before (so perhaps new to the store).
    first_seen: bool,
}

impl Monitor {
    /// Decodes one account of the program and writes it to the store,
    /// unless its data is what was applied last time. Ok(true) when it was
    /// new (stored, or undecodable and counted once), Ok(false) when
    /// unchanged; Err (already logged) when the store refused it, so a pass
    /// can tell health that records are left unstored.
    pub(super) async fn apply_account(
        &self,
        key: Pubkey,
        data: &[u8],
        slot: u64,
        source: Source,
    ) -> Result<bool, String> {
        match self.prepare(key, data, slot, source) {
            Prepared::Unchanged => Ok(false),
            Prepared::Counted => Ok(true),
            Prepared::Write(mut write) => {
                let started = Instant::now();
                self.name_creator(&mut write).await;
                self.write_one(&write).await?;
                self.metrics
                    .event_processing_duration
                    .get_or_create(&record_label())
                    .observe(started.elapsed().as_secs_f64());
                Ok(true)
            }
        }
    }

    /// What `data` at `key` asks of the store: nothing (unchanged since it
    /// was last applied, or not written yet), nothing but a count
    /// (undecodable), or a write.
    pub(super) fn prepare(&self, key: Pubkey, data: &[u8], slot: u64, source: Source) -> Prepared {
        let labels = SourceLabels {
            source: source.label().to_string(),
        };
        self.metrics
            .chain_updates_received
            .get_or_create(&labels)
            .inc();
        // Keyed at random per process, so nobody can craft an update
        // that passes for the data it replaces.
        let fingerprint = self.fingerprint_keys.hash_one(data);
        let last = self.last_applied(&key);
        if last == Some(fingerprint) {
            self.metrics
                .chain_updates_unchanged
                .get_or_create(&labels)
                .inc();
            return Prepared::Unchanged;
        }
        if data.iter().all(|b| *b == 0) {
            // Created but not written yet (the builder's accounts between
            // creation and initialization): nothing to record, not garbage.
            return Prepared::Unchanged;
        }
        match Record::decode(data) {
            Ok(record) => match self.chain_write(key, record, slot) {
                Some(write) => Prepared::Write(Box::new(Pending {
                    key,
                    fingerprint,
                    slot,
                    source,
                    write,
                    first_seen: last.is_none(),
                })),
                None => {
                    self.remember(key, fingerprint);
                    Prepared::Unchanged
                }
            },
            Err(e) => {
                self.decode_failed(key, &e);
                self.remember(key, fingerprint);
                Prepared::Counted
            }
        }
    }

    /// Gives a record seen for the first time the transaction that
    /// created it (signature, and its slot rather than the observation's),
    /// so its first step and event carry both whoever records it. One
    /// getSignaturesForAddress; without an answer the record keeps the
    /// observation's slot and no signature. An AccountRequest placed by
    /// RequestAccount is recorded this way: placing writes nothing.
    pub(super) async fn name_creator(&self, pending: &mut Pending) {
        if !pending.first_seen {
            return;
        }
        let (slot, signature) = match &mut pending.write {
            ChainWrite::Request(r) => (&mut r.slot, &mut r.signature),
            ChainWrite::Session(s) => (&mut s.slot, &mut s.signature),
            ChainWrite::Account(a) => (&mut a.slot, &mut a.signature),
            ChainWrite::Consumption(_) | ChainWrite::Reservation(_) => return,
        };
        if !signature.is_empty() {
            return;
        }
        match self.chain.creating_transaction(&pending.key).await {
            Ok(Some((creator, landed))) => {
                *signature = creator.to_string();
                *slot = Some(landed);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(account = %pending.key, error = format!("{e:#}"), "looking up the creating transaction failed")
            }
        }
    }

    /// Stores one prepared record in its own transaction.
    async fn write_one(&self, pending: &Pending) -> Result<(), String> {
        match self.store.write_chain(&pending.write).await {
            Ok(_) => {
                self.applied(pending);
                Ok(())
            }
            Err(e) => {
                self.metrics.chain_store_failures.inc();
                tracing::warn!(account = %pending.key, error = %e, "storing a chain record failed");
                Err(e.to_string())
            }
        }
    }

    /// Stores prepared records in one transaction; if the store refuses
    /// the batch, one by one, so only the culprit is left unstored.
    /// Returns the records left unstored and why.
    pub(super) async fn write_batch(&self, batch: &[Pending]) -> Vec<(Pubkey, String)> {
        let started = Instant::now();
        let writes: Vec<ChainWrite> = batch.iter().map(|p| p.write.clone()).collect();
        match self.store.write_chain_batch(&writes).await {
            Ok(_) => {
                let each = started.elapsed().as_secs_f64() / batch.len().max(1) as f64;
                for pending in batch {
                    self.applied(pending);
                    self.metrics
                        .event_processing_duration
                        .get_or_create(&record_label())
                        .observe(each);
                }
                Vec::new()
            }
            Err(e @ StoreError::Fenced { .. }) => {
                // Another replica owns the shard now: every record would be
                // refused alike, and the lease runner stops this monitor.
                tracing::warn!(error = %e, records = batch.len(), "batch refused: the shard's lease moved on");
                batch.iter().map(|p| (p.key, e.to_string())).collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, records = batch.len(), "a batch was refused; storing its records one by one");
                let mut unstored = Vec::new();
                for pending in batch {
                    if let Err(why) = self.write_one(pending).await {
                        unstored.push((pending.key, why));
                    }
                }
                unstored
            }
        }
    }

    /// Bookkeeping after a record was stored.
    fn applied(&self, pending: &Pending) {
        self.remember(pending.key, pending.fingerprint);
        self.metrics
            .chain_updates_processed
            .get_or_create(&SourceLabels {
                source: pending.source.label().to_string(),
            })
            .inc();
        self.metrics
            .last_processed_slot
            .set(self.metrics.last_processed_slot.get().max(pending.slot));
        self.view
            .applied_slot
            .fetch_max(pending.slot, std::sync::atomic::Ordering::Relaxed);
    }

    fn last_applied(&self, key: &Pubkey) -> Option<u64> {
        let prints = self.fingerprints.lock().expect("fingerprint lock");
        prints.get(key).copied()
    }

    fn remember(&self, key: Pubkey, fingerprint: u64) {
        let mut prints = self.fingerprints.lock().expect("fingerprint lock");
        prints.insert(key, fingerprint);
        self.metrics.monitor_fingerprints.set(prints.len() as u64);
    }

    /// The store record for a decoded chain record (None: not the
    /// monitor's to write).
    fn chain_write(&self, key: Pubkey, record: Record, slot: u64) -> Option<ChainWrite> {
        let id = key.to_string();
        Some(match record {
            Record::AccountRequest(r) => ChainWrite::Request(AccountRequestRecord {
                id,
                // Before `capabilities` moves out of `r`.
                account_id: r.initialized_account().as_ref().map(base58),
                owner: base58(&r.owner),
                capabilities: r.capabilities,
                init_state_hash: hex::encode(r.init_state_hash),
                created_at_ms: r.created_at.saturating_mul(1000),
                slot: Some(slot),
                signature: String::new(),
            }),
            Record::Account(r) => ChainWrite::Account(AccountRecord {
                id,
                owner: base58(&r.owner),
                capabilities: r.capabilities,
                state_hash: hex::encode(r.state_hash),
                is_active: r.is_active,
                created_at_ms: r.created_at.saturating_mul(1000),
                request_id: String::new(),
                slot: Some(slot),
                signature: String::new(),
            }),
            Record::Session(mut r) => {
                r.namespace = self.storable(r.namespace, &id);
                ChainWrite::Session(session_record(id, r, slot))
            }
            Record::SessionConsumption(r) => {
                let signature = if r.transaction_signature == [0; 64] {
                    String::new()
                } else {
                    bs58::encode(r.transaction_signature).into_string()
                };
                ChainWrite::Consumption(ConsumptionRecord {
                    consumed_session: base58(&r.consumed_session),
                    created_sessions: r.created_sessions.iter().map(base58).collect(),
                    transaction_signature: signature,
                    consumed_at_ms: r.consumed_at.saturating_mul(1000),
                    slot: Some(slot),
                })
            }
            // Singleton state belongs to singleton administration.
            Record::SingletonState(_) => return None,
            Record::SessionQueue(q) => {
                self.queue_seen(key, q.pending);
                return None;
            }
            Record::SessionReservation(r) => ChainWrite::Reservation(ReservationRecord {
                state: match r.status {
                    1 => LinearState::ReservedSession,
                    2 => LinearState::QueuedSession,
                    _ => LinearState::ResetSession,
                },
                id,
                owner: base58(&r.owner),
                namespace: self.storable(r.namespace, &key.to_string()),
                observed_at_ms: crate::store::now_ms(),
                slot: Some(slot),
                signature: String::new(),
            }),
        })
    }

    /// A namespace as the store keeps it: NUL (valid UTF-8, allowed by the
    /// program, but refused by PostgreSQL text columns) becomes U+FFFD, the
    /// Unicode replacement character, on every backend alike, so the
    /// session is still tracked and its namespace still filterable.
    pub(super) fn storable(&self, namespace: String, entity: &str) -> String {
        if !namespace.contains('\0') {
            return namespace;
        }
        self.metrics.chain_strings_replaced.inc();
        tracing::warn!(
            entity,
            "a namespace on chain holds NUL characters: stored with U+FFFD in their place"
        );
        namespace.replace('\0', "\u{FFFD}")
    }

    /// Counts and logs an undecodable account. Once per distinct content:
    /// the fingerprint is remembered, so the same data is not seen again.
    fn decode_failed(&self, key: Pubkey, error: &DecodeError) {
        self.metrics
            .chain_decode_failures
            .get_or_create(&DecodeLabels {
                kind: error.label().to_string(),
            })
            .inc();
        tracing::warn!(account = %key, error = %error, "skipping undecodable account of the shard program");
    }

    /// Notes a SessionQueue record's size: `queue_size{queue=
    /// "session_factory"}` is the sum over the program's queues.
    pub(super) fn queue_seen(&self, queue: Pubkey, pending: u64) {
        let mut queues = self.queues.lock().expect("queue sizes lock");
        queues.insert(queue, pending);
        let total = queues.values().sum();
        self.metrics
            .queue_size
            .get_or_create(&QueueLabels {
                queue: "session_factory".into(),
            })
            .set(total);
    }

    /// Fetches accounts named by an event and applies them now, rather than
    /// waiting for their own notification or the next reconciliation.
    pub(super) async fn refresh(&self, keys: &[codec::Key]) {
        let keys: Vec<Pubkey> = keys.iter().map(|k| Pubkey::new_from_array(*k)).collect();
        match self.chain.accounts(&keys).await {
            Ok((slot, data)) => {
                for (key, data) in keys.iter().zip(data) {
                    if let Some(data) = data {
                        // A failure is retried (and reported) by the next pass.
                        if self
                            .apply_account(*key, &data, slot, Source::Logs)
                            .await
                            .is_err()
                        {
                            self.pass_soon();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "fetching accounts named by an event failed"
            ),
        }
    }
}

/// The label of account records in `event_processing_duration`.
fn record_label() -> EventTypeLabels {
    EventTypeLabels {
        event_type: "record".into(),
    }
}

fn session_record(id: String, r: codec::SessionRecord, slot: u64) -> SessionRecord {
    SessionRecord {
        id,
        owner: base58(&r.owner),
        accounts: r.accounts.iter().map(base58).collect(),
        namespace: r.namespace,
        is_consumed: r.is_consumed,
        nonce: r.nonce,
        created_at_ms: r.created_at.saturating_mul(1000),
        metadata: r.metadata,
        slot: Some(slot),
        signature: String::new(),
    }
}
