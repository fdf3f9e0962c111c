//! The program's events: read from a transaction's logs and, when the logs
//! say there is more (a self-CPI, or `Log truncated`), from the transaction
//! itself; each recorded once, timed against seed 001's deadlines, and
//! checked against the session state machine.

use std::time::Duration;

use valence_lifecycle_api::v1::{self as api, lifecycle_event::Payload, ComponentState};

use super::Monitor;
use crate::{
    chain::{
        codec::{self, base58, ChainEvent},
        logs::{self, FetchedTransaction, LogSummary, CPI_EVENT_INDEX},
    },
    store::{
        AccountRecord, AccountRequestRecord, FactoryStep, LinearState, NewEvent, ReservationRecord,
        StepOutcome, StoreResult,
    },
    telemetry::metrics::{DecodeLabels, EventTypeLabels, SourceLabels},
};

/// The health component that reports lost events.
pub(crate) const CHAIN_LOGS: &str = "chain-logs";

/// How long `chain-logs` stays degraded after the last gap.
const GAP_HEALTH_WINDOW: Duration = Duration::from_secs(600);

/// Position of a transaction's ChainGap in the dedupe table (below the CPI
/// events' positions, above any log event's).
const GAP_INDEX: u32 = CPI_EVENT_INDEX - 1;

/// Seed 001's maximum processing delay of an event type, where it sets one.
pub(crate) fn deadline(event_type: &str) -> Option<Duration> {
    codec::EVENT_DEADLINES_MS
        .iter()
        .find(|(name, _)| *name == event_type)
        .map(|(_, ms)| Duration::from_millis(*ms))
}

/// Where a program event sits: its transaction, slot and place, and when
/// its transaction was confirmed (Unix ms: the notification's arrival, or
/// the block time of a transaction read back later).
pub(super) struct At<'a> {
    pub(super) signature: &'a str,
    pub(super) slot: u64,
    pub(super) index: u32,
    pub(super) confirmed_at_ms: i64,
}

impl At<'_> {
    /// A chain event about `entity` at this place.
    fn event(&self, entity: &codec::Key, payload: Payload) -> NewEvent {
        NewEvent::new(base58(entity), payload).on_chain(Some(self.slot), self.signature)
    }
}

impl Monitor {
    /// Applies the program's events of one transaction, given its logs
    /// (a logsSubscribe notification), fetching the transaction when the
    /// logs do not hold them all.
    pub(super) async fn apply_logs(
        &self,
        signature: &str,
        slot: u64,
        logs: &[String],
        failed: bool,
        confirmed_at_ms: i64,
    ) {
        if failed {
            // A failed transaction changed nothing, whatever it logged first.
            self.count_logs(false);
            return;
        }
        let summary = logs::summarize(logs, &self.chain.program_id.to_string());
        let fetched = if summary.needs_transaction() {
            match self.chain.transaction(signature).await {
                Ok(tx) => Some(tx),
                Err(e) => {
                    // The backfill reads every program transaction again,
                    // so what is missing here is recorded from there.
                    tracing::warn!(signature, error = format!("{e:#}"), "fetching a transaction for its self-CPI events failed; the next pass reads it again");
                    None
                }
            }
        } else {
            None
        };
        self.apply_transaction(signature, slot, &summary, fetched.as_ref(), confirmed_at_ms)
            .await;
    }

    /// Applies a transaction read with getTransaction (the backfill).
    pub(super) async fn apply_fetched(&self, signature: &str, slot: u64, tx: &FetchedTransaction) {
        if tx.failed {
            self.count_logs(false);
            return;
        }
        let summary = logs::summarize(&tx.logs, &self.chain.program_id.to_string());
        let confirmed_at_ms = tx
            .block_time
            .map_or_else(crate::store::now_ms, |t| t.saturating_mul(1000));
        self.apply_transaction(signature, slot, &summary, Some(tx), confirmed_at_ms)
            .await;
    }

    async fn apply_transaction(
        &self,
        signature: &str,
        slot: u64,
        summary: &LogSummary,
        fetched: Option<&FetchedTransaction>,
        confirmed_at_ms: i64,
    ) {
        // (instruction, position, data): positions are the dedupe keys, the
        // instruction order is the order they happened in (the program uses
        // one form per instruction).
        let mut events: Vec<(u32, u32, &[u8])> = summary
            .events
            .iter()
            .zip(&summary.event_instructions)
            .enumerate()
            .map(|(i, (data, ix))| (*ix, i as u32, data.as_slice()))
            .collect();
        if let Some(tx) = fetched {
            events.extend(
                tx.cpi_events
                    .iter()
                    .enumerate()
                    .map(|(k, (ix, data))| (*ix, CPI_EVENT_INDEX + k as u32, data.as_slice())),
            );
        }
        events.sort_by_key(|(ix, _, _)| *ix);
        for (_, index, data) in events {
            let at = At {
                signature,
                slot,
                index,
                confirmed_at_ms,
            };
            self.apply_event_data(data, &at).await;
        }
        if let (true, Some(tx)) = (summary.truncated, fetched) {
            self.check_gap(signature, slot, summary, tx).await;
        }
        self.count_logs(true);
    }

    fn count_logs(&self, processed: bool) {
        let labels = SourceLabels {
            source: "logs".into(),
        };
        self.metrics
            .chain_updates_received
            .get_or_create(&labels)
            .inc();
        if processed {
            self.metrics
                .chain_updates_processed
                .get_or_create(&labels)
                .inc();
        }
    }

    async fn apply_event_data(&self, data: &[u8], at: &At<'_>) {
        match ChainEvent::decode(data) {
            Ok(event) => {
                let name = event.name();
                match self.apply_event(event, at).await {
                    Ok(true) => {
                        if name != "PDAComputed" {
                            self.observe(name, at);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(signature = at.signature, error = %e, "applying a chain event failed")
                    }
                }
            }
            Err(e) => {
                self.metrics
                    .chain_decode_failures
                    .get_or_create(&DecodeLabels {
                        kind: format!("event_{}", e.label()),
                    })
                    .inc();
                tracing::warn!(signature = at.signature, index = at.index, error = %e, "skipping undecodable program event");
            }
        }
    }

    /// Times an event from its confirmation to now, against its deadline.
    fn observe(&self, event_type: &str, at: &At<'_>) {
        observe_since(&self.metrics, event_type, at.confirmed_at_ms, at.signature);
    }

    /// Applies one event; Ok(true) when it was recorded now (not before).
    async fn apply_event(&self, event: ChainEvent, at: &At<'_>) -> StoreResult<bool> {
        match event {
            ChainEvent::AccountRequested(e) => self.account_requested(e, at).await,
            ChainEvent::PdaComputed(e) => self.pda_computed(e, at).await,
            ChainEvent::AccountInitialized(e) => self.account_initialized(e, at).await,
            ChainEvent::SessionCreated(e) => self.session_created(e, at).await,
            ChainEvent::SessionActivated(e) => self.session_activated(e, at).await,
            ChainEvent::SessionConsumed(e) => self.session_consumed(e, at).await,
            ChainEvent::QueueProcessed(e) => self.queue_processed(e, at).await,
            ChainEvent::Other(_) => Ok(false),
            factory => {
                let name = factory.name();
                self.factory_event(factory, name, at).await
            }
        }
    }

    async fn account_requested(
        &self,
        e: codec::AccountRequestedEvent,
        at: &At<'_>,
    ) -> StoreResult<bool> {
        self.store
            .upsert_account_request(&AccountRequestRecord {
                id: base58(&e.request_id),
                owner: base58(&e.owner),
                capabilities: e.capabilities,
                init_state_hash: hex::encode(e.init_state_hash),
                created_at_ms: e.created_at.saturating_mul(1000),
                slot: Some(at.slot),
                signature: at.signature.to_string(),
                account_id: None,
            })
            .await
    }

    /// Seed 001's critical path. The event is validated and recorded; the
    /// request it names is the builder's (recorded by AccountRequested just
    /// before, in the same transaction), which the appended event wakes.
    /// Its deadline runs until the builder has verified the account.
    async fn pda_computed(&self, e: codec::PdaComputedEvent, at: &At<'_>) -> StoreResult<bool> {
        let request_id = base58(&e.request_id);
        if let Err(why) = self.validate_pda_computed(&e, &request_id).await {
            self.metrics
                .chain_decode_failures
                .get_or_create(&DecodeLabels {
                    kind: "event_invalid".into(),
                })
                .inc();
            tracing::warn!(signature = at.signature, request = %request_id, why, "ignoring an invalid PDAComputed event");
            return Ok(false);
        }
        let payload = Payload::PdaComputed(api::PdaComputedEvent {
            request_id: request_id.clone(),
            owner: base58(&e.owner),
            account_space: e.account_space,
            init_state_hash: hex::encode(e.init_state_hash),
        });
        // Started before the event is stored, which wakes the builder; only
        // an event recorded now is timed (one seen again is an old one).
        let timing = self
            .clock
            .started(&request_id, at.confirmed_at_ms, &self.metrics);
        let recorded = self.record(at, at.event(&e.request_id, payload)).await;
        if timing && !matches!(recorded, Ok(true)) {
            self.clock.forget(&request_id);
        }
        recorded
    }

    /// An event that names no owner, or a size no account could have, or
    /// not the size of its request's Account record, is not acted on.
    async fn validate_pda_computed(
        &self,
        e: &codec::PdaComputedEvent,
        request_id: &str,
    ) -> Result<(), String> {
        const MAX_ACCOUNT_SPACE: u64 = 10 * 1024 * 1024;
        if e.owner == [0; 32] || e.request_id == [0; 32] {
            return Err("the request or the owner is all zero".into());
        }
        if e.account_space == 0 || e.account_space > MAX_ACCOUNT_SPACE {
            return Err(format!("account_space {} is out of range", e.account_space));
        }
        if let Ok(stored) = self.store.get_account_request(request_id).await {
            let space = crate::builder::plan::account_space(&stored.capabilities) as u64;
            if space != e.account_space {
                return Err(format!(
                    "account_space {} is not the request's Account size {space}",
                    e.account_space
                ));
            }
        }
        Ok(())
    }

    async fn account_initialized(
        &self,
        e: codec::AccountInitializedEvent,
        at: &At<'_>,
    ) -> StoreResult<bool> {
        self.store
            .upsert_account(&AccountRecord {
                id: base58(&e.account_id),
                owner: base58(&e.owner),
                capabilities: e.capabilities,
                state_hash: hex::encode(e.state_hash),
                is_active: true,
                created_at_ms: e.created_at.saturating_mul(1000),
                request_id: base58(&e.request_id),
                slot: Some(at.slot),
                signature: at.signature.to_string(),
            })
            .await
    }

    /// Recorded, then the new session is fetched so that its record
    /// exists as soon as the event does.
    async fn session_created(
        &self,
        mut e: codec::SessionCreatedEvent,
        at: &At<'_>,
    ) -> StoreResult<bool> {
        e.namespace = self.storable(e.namespace, &base58(&e.session_id));
        let payload = Payload::ChainSessionCreated(api::SessionCreatedEvent {
            session_id: base58(&e.session_id),
            owner: base58(&e.owner),
            accounts: e.accounts.iter().map(base58).collect(),
            namespace: e.namespace.clone(),
            nonce: e.nonce,
            created_at: e.created_at,
        });
        let event = at.event(&e.session_id, payload).in_namespace(&e.namespace);
        let recorded = self.record(at, event).await?;
        self.refresh(&[e.session_id]).await;
        Ok(recorded)
    }

    async fn session_activated(
        &self,
        e: codec::SessionActivatedEvent,
        at: &At<'_>,
    ) -> StoreResult<bool> {
        let payload = Payload::SessionActivated(api::SessionActivatedEvent {
            session_id: base58(&e.session_id),
            activated_at: e.activated_at,
            owner: base58(&e.owner),
        });
        self.record(at, at.event(&e.session_id, payload)).await
    }

    /// The consumed session, its consumption record and its successors are
    /// fetched at once; the signature is kept with the consumption.
    async fn session_consumed(
        &self,
        e: codec::SessionConsumedEvent,
        at: &At<'_>,
    ) -> StoreResult<bool> {
        let mut keys = vec![e.consumption_record, e.consumed_session];
        keys.extend(e.created_sessions.iter().copied());
        self.refresh(&keys).await;
        self.store
            .set_consumption_signature(&base58(&e.consumed_session), at.signature)
            .await?;
        Ok(false)
    }

    /// A batch of the chain's queue: recorded about the program; the
    /// queue's size is what is left.
    async fn queue_processed(
        &self,
        e: codec::QueueProcessedEvent,
        at: &At<'_>,
    ) -> StoreResult<bool> {
        let payload = Payload::QueueProcessed(api::QueueProcessedEvent {
            processed: e.processed,
            succeeded: e.succeeded,
            failed: e.failed,
            remaining: e.remaining,
        });
        let program = self.chain.program_id.to_bytes();
        self.record(at, at.event(&program, payload)).await
    }

    /// SessionReserved, SessionQueued, SessionInitializedFromQueue,
    /// ManualSessionInitialized and EmergencySessionReset: recorded, and
    /// checked against the session state machine (store::factory).
    async fn factory_event(
        &self,
        event: ChainEvent,
        name: &'static str,
        at: &At<'_>,
    ) -> StoreResult<bool> {
        let Some((session, step, payload)) = factory_payload(event) else {
            return Ok(false);
        };
        let id = base58(&session);
        let reservation = match &payload {
            Payload::SessionReserved(r) => Some(ReservationRecord {
                id: id.clone(),
                owner: r.owner.clone(),
                // The event does not carry it; the record does.
                namespace: self.reserved_namespace(session).await,
                state: LinearState::ReservedSession,
                observed_at_ms: at.confirmed_at_ms,
                slot: Some(at.slot),
                signature: at.signature.to_string(),
            }),
            _ => None,
        };
        let event = at.event(&session, payload);
        let initializes = matches!(
            step,
            FactoryStep::InitializedFromQueue | FactoryStep::ManualInitialized
        );
        if initializes {
            // The Session record written over the reservation first: the
            // event then names the step the record made (store::factory).
            self.refresh(&[session]).await;
        }
        let outcome = self
            .store
            .record_factory_event(at.signature, at.index, step, reservation.as_ref(), event)
            .await?;
        if let StepOutcome::Anomaly(why) = &outcome {
            let event_type = step.event_type().as_str_name();
            self.metrics
                .session_anomalies
                .get_or_create(&EventTypeLabels {
                    event_type: name.into(),
                })
                .inc();
            tracing::warn!(session = %id, signature = at.signature, event_type, why, "a session factory event the state machine does not allow: recorded, not applied");
        }
        if matches!(step, FactoryStep::Queued | FactoryStep::Reset) {
            // The record the event changed (perhaps already the Session
            // written over it), so the store has it with the event.
            self.refresh(&[session]).await;
        }
        Ok(outcome != StepOutcome::Duplicate)
    }

    /// The namespace of a reservation, read from its record ("" when the
    /// record cannot be read or is no longer a reservation).
    async fn reserved_namespace(&self, session: codec::Key) -> String {
        let key = solana_sdk::pubkey::Pubkey::new_from_array(session);
        let Ok((_, mut data)) = self.chain.accounts(&[key]).await else {
            return String::new();
        };
        match data.pop().flatten().map(|d| codec::Record::decode(&d)) {
            Some(Ok(codec::Record::SessionReservation(r))) => {
                self.storable(r.namespace, &key.to_string())
            }
            _ => String::new(),
        }
    }

    /// Records `event` once per (signature, index).
    pub(super) async fn record(&self, at: &At<'_>, event: NewEvent) -> StoreResult<bool> {
        self.store
            .record_chain_event(at.signature, at.index, event)
            .await
    }

    /// A truncated transaction: each of the program's instructions whose
    /// logs were cut must have left its events in self-CPIs; those that
    /// left none are a gap, recorded once per transaction.
    async fn check_gap(
        &self,
        signature: &str,
        slot: u64,
        summary: &LogSummary,
        tx: &FetchedTransaction,
    ) {
        let finished: Vec<u32> = summary
            .instructions
            .iter()
            .filter(|(_, done)| *done)
            .map(|(i, _)| *i)
            .collect();
        let lost: Vec<u32> = tx
            .program_instructions
            .iter()
            .copied()
            .filter(|i| !finished.contains(i))
            .filter(|i| !tx.cpi_events.iter().any(|(from, _)| from == i))
            .collect();
        if lost.is_empty() {
            return;
        }
        let recovered = tx.cpi_events.len() as u32;
        let reason = format!(
            "the logs were truncated and instructions {lost:?} of the program left no self-CPI events: what they emitted is not known"
        );
        let payload = Payload::ChainGap(api::ChainGap {
            signature: signature.to_string(),
            slot,
            instructions: lost.clone(),
            recovered_events: recovered,
            reason: reason.clone(),
        });
        let program = self.chain.program_id.to_bytes();
        let at = At {
            signature,
            slot,
            index: GAP_INDEX,
            confirmed_at_ms: 0,
        };
        match self.record(&at, at.event(&program, payload)).await {
            Ok(true) => {
                self.metrics.chain_gaps.inc();
                *self.last_gap.lock().expect("gap lock") = Some(std::time::Instant::now());
                tracing::error!(signature, slot, instructions = ?lost, recovered, "events lost to log truncation");
                self.board
                    .set(
                        &self.view.names.chain_logs(),
                        ComponentState::Degraded,
                        format!("events lost to log truncation in {signature} (slot {slot})"),
                    )
                    .await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(signature, error = %e, "recording a chain gap failed"),
        }
    }

    /// `chain-logs` is healthy again once GAP_HEALTH_WINDOW passed without
    /// a gap (the gaps stay in the event log and the counter).
    pub(super) async fn clear_gap_health(&self) {
        let last = *self.last_gap.lock().expect("gap lock");
        if last.is_none_or(|at| at.elapsed() >= GAP_HEALTH_WINDOW) {
            self.board
                .set(
                    &self.view.names.chain_logs(),
                    ComponentState::Running,
                    "every event of the program's transactions was read",
                )
                .await;
        }
    }
}

/// Observes `event_processing_duration{event_type}` from `confirmed_at_ms`
/// to now, and counts (and logs) a missed deadline.
fn observe_since(
    metrics: &crate::telemetry::Metrics,
    event_type: &str,
    confirmed_at_ms: i64,
    what: &str,
) {
    let now = crate::store::now_ms();
    observe_between(metrics, event_type, confirmed_at_ms, now, what);
}

/// Observes `event_processing_duration{event_type}` from `confirmed_at_ms`
/// to `done_at_ms`, and counts (and logs) a missed deadline.
pub(crate) fn observe_between(
    metrics: &crate::telemetry::Metrics,
    event_type: &str,
    confirmed_at_ms: i64,
    done_at_ms: i64,
    what: &str,
) {
    let elapsed_ms = (done_at_ms - confirmed_at_ms).max(0) as u64;
    let elapsed = Duration::from_millis(elapsed_ms);
    let labels = EventTypeLabels {
        event_type: event_type.to_string(),
    };
    metrics
        .event_processing_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    if let Some(limit) = deadline(event_type) {
        if elapsed > limit {
            metrics.event_deadline_missed.get_or_create(&labels).inc();
            tracing::warn!(
                event_type,
                what,
                elapsed_ms,
                deadline_ms = limit.as_millis() as u64,
                "a chain event was processed after its deadline"
            );
        }
    }
}

/// A factory event's session, step and payload.
fn factory_payload(event: ChainEvent) -> Option<(codec::Key, FactoryStep, Payload)> {
    Some(match event {
        ChainEvent::SessionReserved(e) => (
            e.session_id,
            FactoryStep::Reserved,
            Payload::SessionReserved(api::SessionReservedEvent {
                session_id: base58(&e.session_id),
                owner: base58(&e.owner),
                expires_at: e.expires_at,
            }),
        ),
        ChainEvent::SessionQueued(e) => (
            e.session_id,
            FactoryStep::Queued,
            Payload::SessionQueued(api::SessionQueuedEvent {
                session_id: base58(&e.session_id),
                queue_position: e.queue_position,
                deadline: e.deadline,
            }),
        ),
        ChainEvent::SessionInitializedFromQueue(e) => (
            e.session_id,
            FactoryStep::InitializedFromQueue,
            Payload::SessionInitializedFromQueue(api::SessionInitializedFromQueueEvent {
                session_id: base58(&e.session_id),
                queue_position: e.queue_position,
            }),
        ),
        ChainEvent::ManualSessionInitialized(e) => (
            e.session_id,
            FactoryStep::ManualInitialized,
            Payload::ManualSessionInitialized(api::ManualSessionInitializedEvent {
                session_id: base58(&e.session_id),
                initializer: base58(&e.initializer),
            }),
        ),
        ChainEvent::EmergencySessionReset(e) => (
            e.session_id,
            FactoryStep::Reset,
            Payload::EmergencySessionReset(api::EmergencySessionResetEvent {
                session_id: base58(&e.session_id),
                authority: base58(&e.authority),
                reason: e.reason,
            }),
        ),
        _ => return None,
    })
}
