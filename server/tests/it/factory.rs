//! Seed 001's session factory on a real Surfnet: the stand-in program's
//! reserve / queue / initialize / reset instructions, sent as real
//! transactions, drive all nine of seed 001's events into the store, the
//! session progressions, Subscribe and /metrics; events emitted through a
//! self-CPI survive log truncation, and events that do not are reported as
//! a chain gap. The state machine's refusals are checked on the store.

use std::{collections::HashSet, time::Duration};

use solana_sdk::{
    pubkey::Pubkey,
    signature::{Keypair, Signer},
};
use valence_lifecycle_api::v1::{
    lifecycle_event::Payload, subscribe_response::Message, AccountRequestStatus, EventType,
    GetProgressionRequest, GetSessionRequest, LifecycleEvent, LinearState, ListEventsRequest,
    StartPosition, SubscribeRequest,
};
use valence_lifecycle_server::{
    chain::factory as fx,
    store::{FactoryStep, LinearState as Stored, NewEvent, ReservationRecord, StepOutcome},
};

use crate::{
    builder::Wallet,
    chain::{create_owned, request_account, send, Net},
    common::{backend_tests, eventually, fresh_store, health, metric, TestDb, TestServer},
};

/// A SessionQueue on chain with its authority, and the instructions that use it.
struct Factory<'a> {
    net: &'a Net,
    queue: Pubkey,
    authority: Keypair,
}

impl<'a> Factory<'a> {
    fn new(net: &'a Net) -> Factory<'a> {
        let authority = Keypair::new();
        let (queue, create) = create_owned(net, fx::QUEUE_SPACE);
        let init = fx::init_queue(&net.program, &queue.pubkey(), &authority.pubkey());
        tokio::task::block_in_place(|| send(net, &[create, init], &[&queue, &authority]));
        Factory {
            net,
            queue: queue.pubkey(),
            authority,
        }
    }

    fn program(&self) -> &Pubkey {
        &self.net.program
    }

    /// Reserves a session (ten minutes to queue it); its address.
    fn reserve(&self, namespace: &str) -> Pubkey {
        let (session, create) = create_owned(self.net, fx::reservation_space(namespace));
        let owner = Pubkey::new_from_array([7; 32]);
        let ix = fx::reserve_session(
            self.program(),
            &session.pubkey(),
            &self.queue,
            &owner,
            namespace,
            600,
        );
        tokio::task::block_in_place(|| send(self.net, &[create, ix], &[&session]));
        session.pubkey()
    }

    fn queue(&self, session: &Pubkey) -> String {
        let ix = fx::queue_session(self.program(), session, &self.queue, 60);
        tokio::task::block_in_place(|| send(self.net, &[ix], &[]))
    }

    fn initialize_from_queue(&self, session: &Pubkey) -> String {
        let ix = fx::initialize_from_queue(self.program(), session, &self.queue);
        tokio::task::block_in_place(|| send(self.net, &[ix], &[]))
    }

    /// process_queue over `sessions`, after `pad` bytes of another
    /// instruction's logs.
    fn process(&self, sessions: &[Pubkey], pad: u32) -> String {
        let mut ixs = Vec::new();
        if pad > 0 {
            ixs.push(fx::pad_logs(self.program(), pad));
        }
        ixs.push(fx::process_queue(self.program(), &self.queue, sessions));
        tokio::task::block_in_place(|| send(self.net, &ixs, &[]))
    }

    fn manual(&self, session: &Pubkey) -> String {
        let ix = fx::manual_initialize(
            self.program(),
            session,
            &self.queue,
            &self.authority.pubkey(),
        );
        tokio::task::block_in_place(|| send(self.net, &[ix], &[&self.authority]))
    }

    fn reset(&self, session: &Pubkey, reason: &str) -> String {
        let ix = fx::emergency_reset(
            self.program(),
            session,
            &self.queue,
            &self.authority.pubkey(),
            reason,
        );
        tokio::task::block_in_place(|| send(self.net, &[ix], &[&self.authority]))
    }
}

/// Seed 001's nine events, as the API names them.
const NINE: [EventType; 9] = [
    EventType::PdaComputed,
    EventType::SessionQueued,
    EventType::QueueProcessed,
    EventType::SessionReserved,
    EventType::ChainSessionCreated,
    EventType::SessionActivated,
    EventType::SessionInitializedFromQueue,
    EventType::ManualSessionInitialized,
    EventType::EmergencySessionReset,
];

async fn events_of(server: &TestServer, event_type: EventType) -> Vec<LifecycleEvent> {
    server
        .lifecycle()
        .await
        .list_events(ListEventsRequest {
            event_type: event_type as i32,
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// The states of an entity's history, in order (empty if unknown).
async fn history(server: &TestServer, id: &Pubkey) -> Vec<i32> {
    let answer = server
        .lifecycle()
        .await
        .get_progression(GetProgressionRequest {
            entity_id: id.to_string(),
        })
        .await;
    answer
        .ok()
        .and_then(|p| p.into_inner().progression)
        .map(|p| p.history.iter().map(|t| t.to_state).collect())
        .unwrap_or_default()
}

async fn session_state(server: &TestServer, id: &Pubkey) -> i32 {
    server
        .lifecycle()
        .await
        .get_session(GetSessionRequest { id: id.to_string() })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .state
}

fn states(list: &[LinearState]) -> Vec<i32> {
    list.iter().map(|s| *s as i32).collect()
}

/// Waits until `id` has reached the end of `path` along it. A step may be
/// missing from the history when the session's record came before that
/// step's event (a late event is recorded and changes nothing, README
/// "Seed 001's session factory"), so the history must be `path` or a part
/// of it with the same first and last steps; the events are checked apart.
async fn wait_history(server: &TestServer, id: &Pubkey, path: &[LinearState], what: &str) {
    let full = states(path);
    eventually(Duration::from_secs(30), what, || {
        let full = full.clone();
        async move { along(&history(server, id).await, &full) }
    })
    .await;
    let seen = history(server, id).await;
    if seen != full {
        eprintln!("{what}: history {seen:?}, a step recorded late");
    }
}

/// `seen` starts and ends as `path` does and keeps its order.
fn along(seen: &[i32], path: &[i32]) -> bool {
    let mut rest = path.iter();
    seen.first() == path.first()
        && seen.last() == path.last()
        && seen.iter().all(|s| rest.any(|p| p == s))
}

const FACTORY_QUEUE: &str = "queue_size{queue=\"session_factory\"}";

backend_tests! {
    /// Every one of seed 001's nine events, through real transactions:
    /// recorded with slot and signature, moving sessions through the
    /// factory's states (GetSession, GetProgression), streamed by
    /// Subscribe, timed in /metrics, and the chain's queue size exported.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_session_factory_drives_all_nine_events_through_store_progressions_stream_and_metrics(db: Db) {
        let net = Net::start().await;
        let Some(test_db) = TestDb::new(db).await else { return };
        let wallet = Wallet::funded(&net);
        let mut config = net.config(&test_db);
        config.service.keypair_path = wallet.path.display().to_string();
        let server = TestServer::start_with(test_db, config).await;
        server.wait_healthy(Duration::from_secs(10)).await;
        let mut stream = server
            .events()
            .await
            .subscribe(SubscribeRequest {
                event_types: NINE.iter().map(|t| *t as i32).collect(),
                start: StartPosition::Oldest as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();

        let factory = Factory::new(&net);
        // AccountRequested + PDAComputed: the builder creates the account.
        let (request, _) = request_account(&net, vec!["transfer".into()]);
        // Reserved → queued → initialized from the queue (log events).
        let a = factory.reserve("factory");
        factory.queue(&a);
        factory.initialize_from_queue(&a);
        // Two queued, initialized in one batch (self-CPI events).
        let (b, c) = (factory.reserve("factory"), factory.reserve("factory"));
        factory.queue(&b);
        factory.queue(&c);
        let batch = factory.process(&[b, c], 0);
        // Reserved → initialized by hand.
        let d = factory.reserve("factory");
        factory.manual(&d);
        // Reserved → queued → reset; the chain's queue holds it meanwhile.
        let e = factory.reserve("factory");
        factory.queue(&e);
        eventually(Duration::from_secs(20), "the chain's queue size exported", || async {
            metric(&server, FACTORY_QUEUE).await == 1.0
        })
        .await;
        factory.reset(&e, "stuck in the queue");

        let initialized = vec![LinearState::ReservedSession, LinearState::QueuedSession, LinearState::Session];
        for (id, what) in [(&a, "a"), (&b, "b"), (&c, "c")] {
            wait_history(&server, id, &initialized, &format!("{db:?}: {what} reserved, queued, initialized")).await;
        }
        wait_history(&server, &d, &[LinearState::ReservedSession, LinearState::Session], "d initialized by hand").await;
        let reset = [LinearState::ReservedSession, LinearState::QueuedSession, LinearState::ResetSession];
        wait_history(&server, &e, &reset, "e reset").await;
        // Every step names its transaction, whether its event or its record
        // was seen first.
        for (id, what) in [(&a, "a"), (&b, "b"), (&d, "d"), (&e, "e")] {
            eventually(Duration::from_secs(20), &format!("{db:?}: every step of {what} signed"), || async {
                let p = server
                    .lifecycle()
                    .await
                    .get_progression(GetProgressionRequest { entity_id: id.to_string() })
                    .await
                    .unwrap()
                    .into_inner()
                    .progression
                    .unwrap();
                p.history.iter().all(|t| !t.signature.is_empty() && t.slot.is_some())
            })
            .await;
        }
        assert_eq!(session_state(&server, &a).await, LinearState::Session as i32, "{db:?}");
        assert_eq!(session_state(&server, &e).await, LinearState::ResetSession as i32, "{db:?}");
        let stored = server
            .lifecycle()
            .await
            .get_session(GetSessionRequest { id: b.to_string() })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        assert_eq!(stored.namespace, "factory", "{db:?}: the reservation's namespace is kept");

        for event_type in NINE {
            let found = events_of(&server, event_type).await;
            assert!(!found.is_empty(), "{db:?}: no {event_type:?} recorded");
            for event in &found {
                assert!(event.slot.is_some() && !event.signature.is_empty(), "{db:?}: {event_type:?} without slot or signature");
            }
        }
        let processed = events_of(&server, EventType::QueueProcessed).await;
        let Some(Payload::QueueProcessed(q)) = processed.iter().find(|e| e.signature == batch).and_then(|e| e.payload.clone()) else {
            panic!("{db:?}: QueueProcessed of the batch")
        };
        assert_eq!((q.processed, q.succeeded, q.failed), (2, 2, 0), "{db:?}");
        let from_queue = events_of(&server, EventType::SessionInitializedFromQueue).await;
        assert_eq!(from_queue.iter().filter(|e| e.signature == batch).count(), 2, "{db:?}: both CPI-emitted initializations");
        let resets = events_of(&server, EventType::EmergencySessionReset).await;
        let Some(Payload::EmergencySessionReset(r)) = resets[0].payload.clone() else { panic!() };
        assert_eq!((r.reason.as_str(), r.authority), ("stuck in the queue", factory.authority.pubkey().to_string()));

        // Subscribe replays all nine from the oldest event on.
        let mut seen = HashSet::new();
        tokio::time::timeout(Duration::from_secs(20), async {
            while seen.len() < NINE.len() {
                if let Some(Message::Event(e)) = stream.message().await.unwrap().unwrap().message {
                    seen.insert(e.event_type);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{db:?}: Subscribe showed only {seen:?}"));

        // PDAComputed acted on: one verified account, timed to verification.
        let client = server.lifecycle().await;
        crate::builder::wait_status(&client, &request.pubkey(), AccountRequestStatus::Initialized, Duration::from_secs(20)).await;
        for event_type in ["PDAComputed", "SessionReserved", "SessionQueued", "QueueProcessed", "SessionInitializedFromQueue", "ManualSessionInitialized", "EmergencySessionReset"] {
            let count = metric(&server, &format!("event_processing_duration_count{{event_type=\"{event_type}\"}}")).await;
            assert!(count >= 1.0, "{db:?}: {event_type} timed {count} times");
        }
        eventually(Duration::from_secs(20), "the chain's queue empty again", || async {
            metric(&server, FACTORY_QUEUE).await == 0.0
        })
        .await;
        assert_eq!(metric(&server, "valence_session_anomalies_total").await, 0.0, "{db:?}");
        assert!(server.stop().await);
    }
}

backend_tests! {
    /// Logs cut by the runtime's 10,000-byte limit: process_queue's events
    /// (self-CPIs) are recovered from the transaction's inner instructions;
    /// reserve_session's (log lines only) are lost, and that is a ChainGap
    /// event, a counter and degraded `chain-logs` health, while the
    /// reservation itself still arrives from its record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn truncated_logs_yield_their_self_cpi_events_and_what_is_lost_is_a_chain_gap(db: Db) {
        let net = Net::start().await;
        let Some(test_db) = TestDb::new(db).await else { return };
        let config = net.config(&test_db);
        let server = TestServer::start_with(test_db, config).await;
        server.wait_healthy(Duration::from_secs(10)).await;
        let factory = Factory::new(&net);
        let b = factory.reserve("cut");
        factory.queue(&b);
        let recovered = factory.process(&[b], 12_000);
        let logs = tokio::task::block_in_place(|| {
            let json = solana_client::rpc_config::UiTransactionEncoding::Json;
            net.surfnet.rpc_client().get_transaction(&recovered.parse().unwrap(), json).unwrap()
        });
        let logs: Vec<String> = logs.transaction.meta.unwrap().log_messages.unwrap();
        assert!(logs.iter().any(|l| l == "Log truncated"), "the padding overflows the log limit: {logs:?}");

        wait_history(&server, &b, &[LinearState::ReservedSession, LinearState::QueuedSession, LinearState::Session], "b initialized").await;
        eventually(Duration::from_secs(20), "the batch's events recovered", || async {
            events_of(&server, EventType::QueueProcessed).await.iter().any(|e| e.signature == recovered)
                && events_of(&server, EventType::SessionInitializedFromQueue).await.iter().any(|e| e.signature == recovered)
        })
        .await;

        let (lost, create) = create_owned(&net, fx::reservation_space("cut"));
        let owner = Pubkey::new_from_array([7; 32]);
        let reserve = fx::reserve_session(&net.program, &lost.pubkey(), &factory.queue, &owner, "cut", 600);
        let pad = fx::pad_logs(&net.program, 12_000);
        let cut = tokio::task::block_in_place(|| send(&net, &[create, pad, reserve], &[&lost]));
        eventually(Duration::from_secs(20), "a chain gap for the cut transaction", || async {
            events_of(&server, EventType::ChainGap).await.iter().any(|e| e.signature == cut)
        })
        .await;
        let gaps = events_of(&server, EventType::ChainGap).await;
        assert_eq!(gaps.len(), 1, "{db:?}: only the unrecoverable transaction is a gap");
        let Some(Payload::ChainGap(gap)) = gaps[0].payload.clone() else { panic!() };
        assert_eq!(gap.instructions, vec![2], "{db:?}: reserve_session was the third instruction");
        assert_eq!(metric(&server, "valence_chain_gaps_total").await, 1.0, "{db:?}");
        let report = health(&server.http()).await;
        let chain_logs = report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "chain-logs")
            .cloned()
            .unwrap_or_else(|| panic!("chain-logs in {report}"));
        assert_eq!(chain_logs["state"], "degraded", "{db:?}: {chain_logs}");
        // The record still says what the lost event would have.
        wait_history(&server, &lost.pubkey(), &[LinearState::ReservedSession], "the reservation from its record").await;
        assert!(server.stop().await);
    }
}

fn reservation(id: &str) -> ReservationRecord {
    ReservationRecord {
        id: id.into(),
        owner: "owner".into(),
        namespace: "ns".into(),
        state: Stored::ReservedSession,
        observed_at_ms: 1_700_000_000_000,
        slot: Some(1),
        signature: "sig-reserve".into(),
    }
}

fn factory_event(id: &str, payload: Payload) -> NewEvent {
    NewEvent::new(id, payload).on_chain(Some(2), "sig")
}

backend_tests! {
    /// The state machine on the store: an initialization from the queue of
    /// a session never queued, and anything after an emergency reset, are
    /// recorded with a SessionAnomaly beside them and change nothing; a
    /// replayed event is not recorded (nor refused) twice; an event whose
    /// record came first is late, not wrong.
    #[tokio::test]
    async fn factory_events_the_state_machine_refuses_are_anomalies_that_change_nothing(db: Db) {
        use valence_lifecycle_api::v1 as api;
        let Some((store, _db)) = fresh_store(db).await else { return };
        let id = "Session1111111111111111111111111111111111111";
        let reserved = Payload::SessionReserved(api::SessionReservedEvent { session_id: id.into(), owner: "owner".into(), expires_at: 1 });
        let outcome = store
            .record_factory_event("sig-reserve", 0, FactoryStep::Reserved, Some(&reservation(id)), factory_event(id, reserved))
            .await
            .unwrap();
        assert_eq!(outcome, StepOutcome::Applied, "{db:?}");
        let skipped = Payload::SessionInitializedFromQueue(api::SessionInitializedFromQueueEvent { session_id: id.into(), queue_position: 0 });
        let outcome = store
            .record_factory_event("sig-skip", 0, FactoryStep::InitializedFromQueue, None, factory_event(id, skipped.clone()))
            .await
            .unwrap();
        assert!(matches!(&outcome, StepOutcome::Anomaly(why) if why.contains("reserved_session")), "{db:?}: {outcome:?}");
        let again = store
            .record_factory_event("sig-skip", 0, FactoryStep::InitializedFromQueue, None, factory_event(id, skipped))
            .await
            .unwrap();
        assert_eq!(again, StepOutcome::Duplicate, "{db:?}");
        let progression = store.get_progression(id).await.unwrap();
        assert_eq!(progression.current_state, Stored::ReservedSession, "{db:?}: the anomaly changed nothing");

        let reset = Payload::EmergencySessionReset(api::EmergencySessionResetEvent { session_id: id.into(), authority: "a".into(), reason: "r".into() });
        let outcome = store
            .record_factory_event("sig-reset", 0, FactoryStep::Reset, None, factory_event(id, reset))
            .await
            .unwrap();
        assert_eq!(outcome, StepOutcome::Applied, "{db:?}");
        let manual = Payload::ManualSessionInitialized(api::ManualSessionInitializedEvent { session_id: id.into(), initializer: "a".into() });
        let outcome = store
            .record_factory_event("sig-manual", 0, FactoryStep::ManualInitialized, None, factory_event(id, manual))
            .await
            .unwrap();
        assert!(matches!(&outcome, StepOutcome::Anomaly(why) if why.contains("reset")), "{db:?}: {outcome:?}");
        let progression = store.get_progression(id).await.unwrap();
        assert_eq!(progression.current_state, Stored::ResetSession, "{db:?}");
        let query = valence_lifecycle_server::store::EventQuery {
            shard: Default::default(),
            event_type: Some(EventType::SessionAnomaly),
            entity_id: None,
        };
        let anomalies = store.list_events(&query, None, 100, 0).await.unwrap();
        assert_eq!(anomalies.len(), 2, "{db:?}: one SessionAnomaly per refused event");

        // A queued session whose Session record was stored first: the
        // initialization event that follows is late, not an anomaly.
        let other = "Session2222222222222222222222222222222222222";
        let mut queued = reservation(other);
        queued.state = Stored::QueuedSession;
        store.write_chain(&valence_lifecycle_server::store::ChainWrite::Reservation(queued)).await.unwrap();
        let session = crate::common::session_record(9, &[], "ns");
        let session = valence_lifecycle_server::store::SessionRecord { id: other.into(), ..session };
        assert!(store.upsert_session(&session).await.unwrap(), "{db:?}: the record promotes the reservation");
        let from_queue = Payload::SessionInitializedFromQueue(api::SessionInitializedFromQueueEvent { session_id: other.into(), queue_position: 0 });
        let outcome = store
            .record_factory_event("sig-late", 0, FactoryStep::InitializedFromQueue, None, factory_event(other, from_queue))
            .await
            .unwrap();
        assert_eq!(outcome, StepOutcome::Late, "{db:?}");
        let steps = store.get_progression(other).await.unwrap().history;
        let history: Vec<Stored> = steps.iter().map(|t| t.to).collect();
        assert_eq!(history, vec![Stored::QueuedSession, Stored::Session], "{db:?}");
        // The late event names the step its record made.
        assert_eq!((steps[1].signature.as_str(), steps[1].reason.as_str(), steps[1].slot), ("sig-late", "initialized from the queue", Some(2)), "{db:?}");

        // A reservation whose Session record is first seen consumed (it
        // went by between two passes) ends consumed.
        let third = "Session3333333333333333333333333333333333333";
        store.write_chain(&valence_lifecycle_server::store::ChainWrite::Reservation(reservation(third))).await.unwrap();
        let consumed = valence_lifecycle_server::store::SessionRecord {
            id: third.into(),
            is_consumed: true,
            ..crate::common::session_record(8, &[], "ns")
        };
        assert!(store.upsert_session(&consumed).await.unwrap());
        let progression = store.get_progression(third).await.unwrap();
        assert_eq!(progression.current_state, Stored::ConsumedSession, "{db:?}");
    }
}
