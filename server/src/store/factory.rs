//! Seed 001's session factory: the states a session passes through before
//! its Session record exists (reserved, queued, reset), and the state
//! machine that the factory's chain events drive.
//!
//! ```text
//!   (none) ── SessionReserved ──▶ RESERVED_SESSION ── SessionQueued ──▶ QUEUED_SESSION
//!                                     │    │                               │    │
//!                                     │    └─ EmergencySessionReset ─┐     │    └─ SessionInitializedFromQueue ─┐
//!                                     │                              ▼     │                                    │
//!                                     │                       RESET_SESSION ◀─ EmergencySessionReset            │
//!                                     └─ ManualSessionInitialized ─────────┴─ ManualSessionInitialized ─────────┤
//!                                                                                                               ▼
//!   (none) ── SessionCreated (create_session) ─────────────────────────────────────────────────────────────▶ SESSION
//! ```
//!
//! Two writers meet here, and either may come first: the factory's events
//! (from the logs) and the program's records (a SessionReservation, then the
//! Session written over it). Records are the chain's state, so they only
//! ever move a session forward; events are checked against the machine. An
//! event that the session has already gone past (its record came first, or
//! a cold start stored the records before replaying the logs) is recorded,
//! changes no state and gives the step the record made its signature; one
//! the machine does not allow is recorded with a
//! SessionAnomaly beside it, counted, and changes nothing.

use valence_lifecycle_api::v1::{self as proto, lifecycle_event::Payload, EventType};

use super::{
    entities::{created_event, Cause, FirstStep, SessionRecord},
    error::StoreResult,
    now_ms,
    rows::state,
    EntityKind, LinearState, NewEvent, Store, WriteTx,
};

/// A factory event's step, as the state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactoryStep {
    /// SessionReserved.
    Reserved,
    /// SessionQueued.
    Queued,
    /// SessionInitializedFromQueue.
    InitializedFromQueue,
    /// ManualSessionInitialized.
    ManualInitialized,
    /// EmergencySessionReset.
    Reset,
}

impl FactoryStep {
    /// The event type that carries this step.
    pub fn event_type(self) -> EventType {
        match self {
            FactoryStep::Reserved => EventType::SessionReserved,
            FactoryStep::Queued => EventType::SessionQueued,
            FactoryStep::InitializedFromQueue => EventType::SessionInitializedFromQueue,
            FactoryStep::ManualInitialized => EventType::ManualSessionInitialized,
            FactoryStep::Reset => EventType::EmergencySessionReset,
        }
    }

    /// States the step may leave from, and the state it leads to (None for
    /// the initializations: the Session record that the same transaction
    /// writes is what makes the session a SESSION, with its fields).
    fn rule(self) -> (&'static [Option<LinearState>], Option<LinearState>) {
        use LinearState::*;
        match self {
            FactoryStep::Reserved => (&[None], Some(ReservedSession)),
            FactoryStep::Queued => (&[Some(ReservedSession)], Some(QueuedSession)),
            FactoryStep::InitializedFromQueue => (&[Some(QueuedSession)], None),
            FactoryStep::ManualInitialized => (&[Some(ReservedSession), Some(QueuedSession)], None),
            FactoryStep::Reset => (
                &[Some(ReservedSession), Some(QueuedSession)],
                Some(ResetSession),
            ),
        }
    }

    /// Whether the session, standing at `current`, is already where this
    /// step leads or past it: its record came first, or a cold start stored
    /// the records before replaying the logs (so the history cannot be
    /// asked how it got there).
    fn is_late(self, current: Option<LinearState>) -> bool {
        match self {
            FactoryStep::Reserved => current.is_some(),
            FactoryStep::Queued => rank(current) >= 2,
            FactoryStep::InitializedFromQueue | FactoryStep::ManualInitialized => {
                rank(current) == 3
            }
            FactoryStep::Reset => current == Some(LinearState::ResetSession),
        }
    }

    /// The state a session is in once this step is done.
    fn leads_to(self) -> LinearState {
        match self {
            FactoryStep::Reserved => LinearState::ReservedSession,
            FactoryStep::Queued => LinearState::QueuedSession,
            FactoryStep::InitializedFromQueue | FactoryStep::ManualInitialized => {
                LinearState::Session
            }
            FactoryStep::Reset => LinearState::ResetSession,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            FactoryStep::Reserved => "session reserved",
            FactoryStep::Queued => "session queued",
            FactoryStep::InitializedFromQueue => "initialized from the queue",
            FactoryStep::ManualInitialized => "initialized manually",
            FactoryStep::Reset => "emergency reset",
        }
    }
}

/// What the state machine made of a factory event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Recorded before (same signature and position): nothing done.
    Duplicate,
    /// Recorded; the session moved (or, for an initialization, may now move
    /// when its Session record is stored).
    Applied,
    /// Recorded; the session was already there or past it.
    Late,
    /// Recorded with a SessionAnomaly: not allowed where the session stood.
    Anomaly(String),
}

/// A duplicate writes nothing (its transaction is rolled back).
impl super::Changes for StepOutcome {
    fn any(&self) -> bool {
        *self != StepOutcome::Duplicate
    }
}

/// A reservation as the chain holds it (a SessionReservation record), or
/// as its SessionReserved event describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationRecord {
    /// The session's address (the reservation's own).
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Namespace.
    pub namespace: String,
    /// Where the chain says it stands: reserved, queued or reset.
    pub state: LinearState,
    /// When it was reserved or last observed, Unix ms (the session's
    /// created_at until its Session record replaces it).
    pub observed_at_ms: i64,
    /// Slot of the observation.
    pub slot: Option<u64>,
    /// Signature behind it ("" when unknown).
    pub signature: String,
}

/// Rank of a state along the machine: a record may only move a session
/// to a higher one.
fn rank(state: Option<LinearState>) -> u8 {
    match state {
        None => 0,
        Some(LinearState::ReservedSession) => 1,
        Some(LinearState::QueuedSession) => 2,
        Some(LinearState::ResetSession) => 9,
        Some(_) => 3,
    }
}

impl Store {
    /// Records a factory event (once per signature and position) and
    /// checks it against the state machine, in one transaction.
    pub async fn record_factory_event(
        &self,
        signature: &str,
        index: u32,
        step: FactoryStep,
        reservation: Option<&ReservationRecord>,
        event: NewEvent,
    ) -> StoreResult<StepOutcome> {
        let mut tx = self.begin().await?;
        let outcome = self
            .record_factory_event_in(&mut tx, signature, index, step, reservation, event)
            .await;
        self.finish(tx, outcome).await
    }

    async fn record_factory_event_in(
        &self,
        tx: &mut WriteTx<'_>,
        signature: &str,
        index: u32,
        step: FactoryStep,
        reservation: Option<&ReservationRecord>,
        event: NewEvent,
    ) -> StoreResult<StepOutcome> {
        let id = event.entity_id.clone();
        let namespace = event.namespace.clone();
        let slot = event.slot;
        self.lock_entity(tx, &id).await?;
        if !self
            .record_chain_event_in(tx, signature, index, event)
            .await?
        {
            return Ok(StepOutcome::Duplicate);
        }
        let current = self.session_state(tx, &id).await?;
        let (from, to) = step.rule();
        if from.contains(&current) {
            let cause = Cause {
                slot,
                signature,
                reason: step.reason(),
                namespace: &namespace,
            };
            if let (Some(r), FactoryStep::Reserved) = (reservation, step) {
                self.insert_reservation(tx, r).await?;
            }
            if let Some(to) = to {
                self.move_session(tx, &id, to, &cause).await?;
            }
            return Ok(StepOutcome::Applied);
        }
        if step.is_late(current) {
            self.name_step(tx, &id, step, slot, signature).await?;
            return Ok(StepOutcome::Late);
        }
        let reason = anomaly_reason(step, current);
        let payload = Payload::SessionAnomaly(proto::SessionAnomaly {
            session_id: id.clone(),
            event_type: step.event_type() as i32,
            state: current.map_or(0, |s| proto::LinearState::from(s) as i32),
            reason: reason.clone(),
        });
        let anomaly = NewEvent::new(&id, payload)
            .in_namespace(&namespace)
            .on_chain(slot, signature);
        self.append_event(tx, anomaly).await?;
        Ok(StepOutcome::Anomaly(reason))
    }

    /// A late event names the step its record made first (which knew no
    /// transaction): the step takes the event's signature, slot and reason,
    /// so the history says which transaction moved the session whichever
    /// of the two was seen first.
    async fn name_step(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
        step: FactoryStep,
        slot: Option<u64>,
        signature: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE progression_transitions SET signature = $1, slot = $2, reason = $3 \
             WHERE entity_id = $4 AND to_state = $5 AND signature = ''",
        )
        .bind(signature)
        .bind(slot.map(|s| s as i64))
        .bind(step.reason())
        .bind(id)
        .bind(step.leads_to().as_str())
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// Stores a reservation as the chain's record shows it: a new one gets
    /// its session row and progression; a known one moves forward only.
    /// Whether anything changed.
    pub(crate) async fn upsert_reservation_in(
        &self,
        tx: &mut WriteTx<'_>,
        r: &ReservationRecord,
    ) -> StoreResult<bool> {
        self.lock_entity(tx, &r.id).await?;
        let current = self.session_state(tx, &r.id).await?;
        if rank(Some(r.state)) <= rank(current) {
            return Ok(false);
        }
        let cause = Cause {
            slot: r.slot,
            signature: &r.signature,
            reason: "reservation observed",
            namespace: &r.namespace,
        };
        if current.is_none() {
            self.insert_reservation(tx, r).await?;
        }
        self.move_session(tx, &r.id, r.state, &cause).await?;
        Ok(true)
    }

    /// The row of a session that is only reserved: what the chain says of
    /// it so far (no accounts, nonce 0), listed and fetched like any other.
    async fn insert_reservation(
        &self,
        tx: &mut WriteTx<'_>,
        r: &ReservationRecord,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, owner, accounts, namespace, is_consumed, nonce, created_at, metadata, state, last_activity_at, slot, shard) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
        )
        .bind(r.id.clone())
        .bind(r.owner.clone())
        .bind("[]")
        .bind(r.namespace.clone())
        .bind(false)
        .bind(0i64)
        .bind(r.observed_at_ms)
        .bind(Vec::<u8>::new())
        .bind(LinearState::ReservedSession.as_str())
        .bind(now_ms())
        .bind(r.slot.map(|v| v as i64))
        .bind(self.shard_tag())
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// Moves a session's row and progression to `to`.
    async fn move_session(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
        to: LinearState,
        cause: &Cause<'_>,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET state = $1, last_activity_at = $2 WHERE id = $3")
            .bind(to.as_str())
            .bind(now_ms())
            .bind(id)
            .execute(tx.conn())
            .await?;
        self.transition(tx, id, EntityKind::Session, to, cause)
            .await
    }

    /// A reserved or queued session's Session record arrived: its row takes
    /// the record's fields and it becomes a SESSION (SessionCreated, its
    /// accounts move into it), as a session created directly would.
    pub(super) async fn promote_reservation(
        &self,
        tx: &mut WriteTx<'_>,
        s: &SessionRecord,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sessions SET owner = $1, accounts = $2, namespace = $3, nonce = $4, created_at = $5, metadata = $6, state = $7, last_activity_at = $8, slot = $9 WHERE id = $10",
        )
        .bind(s.owner.clone())
        .bind(serde_json::to_string(&s.accounts).unwrap_or_else(|_| "[]".into()))
        .bind(s.namespace.clone())
        .bind(s.nonce as i64) // by its bits: see rows::u64_bits
        .bind(s.created_at_ms)
        .bind(s.metadata.clone())
        .bind(LinearState::Session.as_str())
        .bind(now_ms())
        .bind(s.slot.map(|v| v as i64))
        .bind(s.id.clone())
        .execute(tx.conn())
        .await?;
        self.append_event(tx, created_event(s)).await?;
        let step = FirstStep::of_session(s);
        self.transition(
            tx,
            &s.id,
            EntityKind::Session,
            LinearState::Session,
            &step.cause,
        )
        .await?;
        self.take_into_session(tx, s).await?;
        if s.is_consumed {
            // First seen already consumed (it went by between two passes).
            self.mark_consumed(tx, &s.id, &[], "", s.slot).await?;
        }
        Ok(())
    }

    /// Where a session's progression stands (None: not known).
    async fn session_state(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
    ) -> StoreResult<Option<LinearState>> {
        sqlx::query("SELECT current_state FROM linear_progressions WHERE entity_id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await?
            .map(|row| state::<LinearState>(&row, "current_state"))
            .transpose()
    }
}

/// Why `step` is not allowed from `current`, for people.
fn anomaly_reason(step: FactoryStep, current: Option<LinearState>) -> String {
    let name = step.event_type().as_str_name();
    match current {
        None => format!("{name} for a session this store does not know (no reservation seen)"),
        Some(LinearState::ResetSession) => {
            format!("{name} after the session's emergency reset")
        }
        Some(state) => format!("{name} is not allowed from {}", state.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: [FactoryStep; 5] = [
        FactoryStep::Reserved,
        FactoryStep::Queued,
        FactoryStep::InitializedFromQueue,
        FactoryStep::ManualInitialized,
        FactoryStep::Reset,
    ];

    /// Every step leads forward (a record, which only moves forward, can
    /// never undo it), and no state is both allowed and late.
    #[test]
    fn steps_lead_forward_and_are_never_both_allowed_and_late() {
        for step in STEPS {
            let (from, to) = step.rule();
            for f in from {
                if let Some(to) = to {
                    assert!(rank(*f) < rank(Some(to)), "{step:?} from {f:?}");
                }
                assert!(!step.is_late(*f), "{step:?} from {f:?}");
            }
        }
    }

    /// The anomalies the README's diagram promises.
    #[test]
    fn out_of_order_steps_are_anomalies() {
        use LinearState::*;
        let anomaly = |step: FactoryStep, at: Option<LinearState>| {
            !step.rule().0.contains(&at) && !step.is_late(at)
        };
        assert!(anomaly(FactoryStep::Queued, None));
        assert!(anomaly(
            FactoryStep::InitializedFromQueue,
            Some(ReservedSession)
        ));
        assert!(anomaly(
            FactoryStep::InitializedFromQueue,
            Some(ResetSession)
        ));
        assert!(anomaly(FactoryStep::ManualInitialized, Some(ResetSession)));
        assert!(anomaly(FactoryStep::Reset, Some(Session)));
        assert!(anomaly(FactoryStep::Reset, None));
        assert!(!anomaly(FactoryStep::Reserved, Some(Session)));
        assert!(!anomaly(
            FactoryStep::InitializedFromQueue,
            Some(ConsumedSession)
        ));
    }

    #[test]
    fn anomalies_name_the_event_and_the_state() {
        let why = anomaly_reason(
            FactoryStep::InitializedFromQueue,
            Some(LinearState::ReservedSession),
        );
        assert!(why.contains("SESSION_INITIALIZED_FROM_QUEUE"), "{why}");
        assert!(why.contains("reserved_session"), "{why}");
    }
}
