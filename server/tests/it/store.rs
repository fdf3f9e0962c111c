//! The store against a real SQLite file and a real PostgreSQL database:
//! the same assertions on both.

use valence_lifecycle_api::v1::EventType;
use valence_lifecycle_server::store::{
    AccountRecord, AccountRequestRecord, AttemptFailure, ChainWrite, ConsumptionRecord, EventQuery,
    LinearState, RequestStatus, SessionFilter, SessionRecord, Store,
};

use crate::common::{
    account_record, backend_tests, fresh_store, initialized_account_record as account, pubkey,
    raw_sql, request_record as request, session_record as session,
};

fn event_types(events: &[valence_lifecycle_api::v1::LifecycleEvent]) -> Vec<EventType> {
    events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect()
}

backend_tests!(
    async fn linear_progression_from_request_to_consumed_session(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        assert!(store.upsert_account_request(&request(1)).await.unwrap());
        assert!(store.upsert_account_request(&request(2)).await.unwrap());
        assert!(store.upsert_account(&account(11, 1)).await.unwrap());
        assert!(store.upsert_account(&account(12, 2)).await.unwrap());
        assert!(store
            .upsert_session(&session(21, &[11, 12], "ns"))
            .await
            .unwrap());

        let req = store.get_account_request(&pubkey(1)).await.unwrap();
        assert_eq!(req.status, RequestStatus::Initialized, "{db:?}");
        assert_eq!(req.account_id, pubkey(11));
        let acc = store.get_account(&pubkey(11)).await.unwrap();
        assert_eq!(acc.state, LinearState::InSession, "{db:?}");

        let consumption = ConsumptionRecord {
            consumed_session: pubkey(21),
            created_sessions: vec![pubkey(22)],
            transaction_signature: "sig-consume".into(),
            consumed_at_ms: 1_700_000_001_000,
            slot: Some(13),
        };
        assert!(store.record_consumption(&consumption).await.unwrap());
        let s = store.get_session(&pubkey(21)).await.unwrap();
        assert!(s.is_consumed);
        assert_eq!(s.state, LinearState::ConsumedSession);
        assert_eq!(s.created_sessions, vec![pubkey(22)]);
        assert_eq!(s.metadata, vec![1, 2, 3]);

        // The account's history starts at its request and ends consumed.
        let p = store.get_progression(&pubkey(11)).await.unwrap();
        let states: Vec<LinearState> = p.history.iter().map(|t| t.to).collect();
        assert_eq!(
            states,
            vec![
                LinearState::AccountRequest,
                LinearState::Account,
                LinearState::InSession,
                LinearState::ConsumedSession
            ],
            "{db:?}"
        );
        assert_eq!(
            p.history[0].from, None,
            "the first step comes from no state"
        );
        assert_eq!(p.current_state, LinearState::ConsumedSession);
        assert_eq!(p.history[1].signature, "sig-init");
        assert_eq!(p.history[1].slot, Some(11));
        assert_eq!(p.history[3].signature, "sig-consume");
    }
);

backend_tests!(
    async fn the_same_state_twice_changes_nothing_and_appends_nothing(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        store.upsert_account_request(&request(1)).await.unwrap();
        store.upsert_account(&account(11, 1)).await.unwrap();
        store
            .upsert_session(&session(21, &[11], "ns"))
            .await
            .unwrap();
        let head = store.head_sequence().await.unwrap();
        assert!(head > 0);
        assert!(!store.upsert_account_request(&request(1)).await.unwrap());
        assert!(!store.upsert_account(&account(11, 1)).await.unwrap());
        assert!(!store
            .upsert_session(&session(21, &[11], "ns"))
            .await
            .unwrap());
        assert_eq!(
            store.head_sequence().await.unwrap(),
            head,
            "{db:?}: no new events"
        );
        let p = store.get_progression(&pubkey(21)).await.unwrap();
        assert_eq!(p.history.len(), 1);
    }
);

backend_tests!(
    async fn every_change_appends_its_events_in_order(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        store.upsert_account_request(&request(1)).await.unwrap();
        store.upsert_account(&account(11, 1)).await.unwrap();
        let events = store.events_after(0, 100).await.unwrap();
        assert_eq!(
            event_types(&events),
            vec![
                EventType::AccountRequested,
                EventType::StateTransition,
                EventType::StateTransition,
                EventType::AccountInitialized,
                EventType::StateTransition
            ],
            "{db:?}"
        );
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert!(
            sequences.windows(2).all(|w| w[1] == w[0] + 1),
            "{sequences:?}"
        );
        assert_eq!(events[3].signature, "sig-init");
        assert_eq!(events[3].slot, Some(11));
        // Page queries: newest first, filtered by type and entity.
        let q = EventQuery {
            shard: Default::default(),
            event_type: Some(EventType::StateTransition),
            entity_id: Some(pubkey(1)),
        };
        let page = store.list_events(&q, None, 10, 0).await.unwrap();
        assert_eq!(page.len(), 2);
        assert!(page[0].sequence > page[1].sequence);
        let after = store
            .list_events(&EventQuery::default(), Some(3), 10, 0)
            .await
            .unwrap();
        assert_eq!(after.first().map(|e| e.sequence), Some(4));
    }
);

backend_tests!(
    async fn lists_filter_and_page(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        for n in 1..=5 {
            store
                .upsert_session(&session(n, &[], if n % 2 == 0 { "even" } else { "odd" }))
                .await
                .unwrap();
        }
        store
            .upsert_session(&SessionRecord {
                is_consumed: true,
                ..session(6, &[], "odd")
            })
            .await
            .unwrap();
        let live = store
            .list_sessions(&SessionFilter::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(live.len(), 5, "{db:?}");
        let all = store
            .list_sessions(
                &SessionFilter {
                    include_consumed: true,
                    ..Default::default()
                },
                None,
                100,
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 6);
        let odd = store
            .list_sessions(
                &SessionFilter {
                    namespace: Some("odd".into()),
                    ..Default::default()
                },
                None,
                100,
            )
            .await
            .unwrap();
        assert_eq!(odd.len(), 3);
        let page1 = store
            .list_sessions(&SessionFilter::default(), None, 2)
            .await
            .unwrap();
        let page2 = store
            .list_sessions(&SessionFilter::default(), Some(&page1[1].key()), 2)
            .await
            .unwrap();
        assert_eq!(page1.len(), 2);
        assert_eq!(page2.len(), 2);
        assert!(page1.iter().all(|a| page2.iter().all(|b| a.id != b.id)));
        assert!(
            page1[0].created_at_ms > page2[0].created_at_ms,
            "newest first"
        );
    }
);

backend_tests!(
    async fn pruning_keeps_the_newest_and_reports_the_oldest(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        for n in 1..=10 {
            store.upsert_session(&session(n, &[], "ns")).await.unwrap();
        }
        let head = store.head_sequence().await.unwrap();
        let deleted = store.prune_events(0, 5).await.unwrap();
        assert_eq!(deleted, head - 5, "{db:?}");
        assert_eq!(store.oldest_sequence().await.unwrap(), head - 4);
        assert_eq!(store.head_sequence().await.unwrap(), head);
        // Age-based pruning never removes the newest event, so the head survives.
        // (This sleep is the condition: every event must be older than 1 ms.)
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        store.prune_events(1, 0).await.unwrap();
        assert_eq!(store.oldest_sequence().await.unwrap(), head);
        assert_eq!(store.head_sequence().await.unwrap(), head);
    }
);

/// The states request `n`'s progression went through, in order.
async fn request_history(store: &Store, n: u8) -> Vec<LinearState> {
    let p = store.get_progression(&pubkey(n)).await.unwrap();
    p.history.iter().map(|t| t.to).collect()
}

backend_tests!(
    // A request left PROCESSING although its account is stored and linked
    // (a failure written over INITIALIZED by an older version, a crash):
    // seeing the account again ends it, with no second transition.
    async fn a_request_whose_account_is_stored_is_repaired_when_the_account_is_seen_again(db: Db) {
        let Some((store, test_db)) = fresh_store(db).await else {
            return;
        };
        store.upsert_account_request(&request(1)).await.unwrap();
        store.upsert_account(&account(11, 1)).await.unwrap();
        raw_sql(
            &test_db.url,
            "UPDATE account_requests SET status = 'processing'",
        )
        .await;

        assert!(
            store.upsert_account(&account(11, 1)).await.unwrap(),
            "{db:?}: repaired"
        );
        let repaired = store.get_account_request(&pubkey(1)).await.unwrap();
        assert_eq!(repaired.status, RequestStatus::Initialized, "{db:?}");
        assert_eq!(repaired.account_id, pubkey(11));
        assert_eq!(
            request_history(&store, 1).await,
            [LinearState::AccountRequest, LinearState::Account],
            "{db:?}"
        );
        assert!(
            !store.upsert_account(&account(11, 1)).await.unwrap(),
            "{db:?}: once"
        );
    }
);

backend_tests!(
    // A late failure (an attempt that was in flight when the account was
    // recorded) does not undo INITIALIZED.
    async fn a_failure_recorded_after_the_account_leaves_the_request_initialized(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        store.upsert_account_request(&request(1)).await.unwrap();
        assert_eq!(store.claim_pending(10).await.unwrap().len(), 1);
        store.upsert_account(&account(11, 1)).await.unwrap();
        let head = store.head_sequence().await.unwrap();
        let failure = AttemptFailure {
            id: &pubkey(1),
            attempts: 2,
            reason: "already in use",
            parked: false,
        };
        store.record_attempt_failure(&failure).await.unwrap();
        let r = store.get_account_request(&pubkey(1)).await.unwrap();
        assert_eq!(r.status, RequestStatus::Initialized, "{db:?}");
        assert_eq!(r.failure_reason, "");
        assert_eq!(
            store.head_sequence().await.unwrap(),
            head,
            "{db:?}: no failure event"
        );
    }
);

backend_tests!(
    // The request's on-chain record names its account (another wallet or
    // deployment initialized it): the request is INITIALIZED and linked to
    // that account whichever of the two records is seen first.
    async fn a_request_record_that_names_its_account_initializes_the_request(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        let linked = |n: u8, account: u8| AccountRequestRecord {
            account_id: Some(pubkey(account)),
            ..request(n)
        };
        // Request first, then its account (which does not name the request).
        assert!(store.upsert_account_request(&linked(1, 11)).await.unwrap());
        let r = store.get_account_request(&pubkey(1)).await.unwrap();
        assert_eq!(
            (r.status, r.account_id.as_str()),
            (RequestStatus::Initialized, pubkey(11).as_str()),
            "{db:?}"
        );
        assert!(store.upsert_account(&account_record(11)).await.unwrap());
        assert_eq!(
            store.get_account(&pubkey(11)).await.unwrap().request_id,
            pubkey(1),
            "{db:?}"
        );
        // Account first, then the request.
        let unlinked: AccountRecord = account_record(12);
        assert!(store.upsert_account(&unlinked).await.unwrap());
        assert!(store.upsert_account_request(&linked(2, 12)).await.unwrap());
        assert_eq!(
            store.get_account(&pubkey(12)).await.unwrap().request_id,
            pubkey(2),
            "{db:?}"
        );
        for n in [1, 2] {
            assert_eq!(
                store.get_account_request(&pubkey(n)).await.unwrap().status,
                RequestStatus::Initialized
            );
            assert_eq!(
                request_history(&store, n).await,
                [LinearState::AccountRequest, LinearState::Account],
                "{db:?}"
            );
        }
        // Seen again: nothing changes.
        let head = store.head_sequence().await.unwrap();
        assert!(!store.upsert_account_request(&linked(1, 11)).await.unwrap());
        assert!(!store.upsert_account(&account_record(11)).await.unwrap());
        assert_eq!(store.head_sequence().await.unwrap(), head, "{db:?}");
    }
);

/// (from, to) of each step of `id`'s progression.
async fn steps(store: &Store, id: &str) -> Vec<(Option<LinearState>, LinearState)> {
    let p = store.get_progression(id).await.unwrap();
    p.history.iter().map(|t| (t.from, t.to)).collect()
}

/// from_state of the StateTransition events of `id`, as proto numbers.
async fn transition_events_from(store: &Store, id: &str) -> Vec<i32> {
    use valence_lifecycle_api::v1::lifecycle_event::Payload;
    let q = EventQuery {
        shard: Default::default(),
        event_type: Some(EventType::StateTransition),
        entity_id: Some(id.to_string()),
    };
    let events = store.list_events(&q, Some(0), 100, 0).await.unwrap();
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::StateTransition(t)) => Some(t.from_state),
            _ => None,
        })
        .collect()
}

backend_tests!(
    // An account's history is one timeline with its request's: every step
    // after the first starts where the one before ended, in the history
    // and in the StateTransition event, whichever record came first.
    async fn an_accounts_history_continues_its_requests(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        use valence_lifecycle_api::v1::LinearState as Proto;
        let expected = vec![
            (None, LinearState::AccountRequest),
            (Some(LinearState::AccountRequest), LinearState::Account),
        ];
        // Request first.
        store.upsert_account_request(&request(1)).await.unwrap();
        store.upsert_account(&account(11, 1)).await.unwrap();
        assert_eq!(steps(&store, &pubkey(11)).await, expected, "{db:?}");
        assert_eq!(steps(&store, &pubkey(1)).await, expected, "{db:?}");
        assert_eq!(
            transition_events_from(&store, &pubkey(11)).await,
            [Proto::AccountRequest as i32],
            "{db:?}"
        );
        // Account first (recorded before its request was known).
        store.upsert_account(&account_record(12)).await.unwrap();
        store.upsert_account_request(&request(2)).await.unwrap();
        store.upsert_account(&account(12, 2)).await.unwrap();
        assert_eq!(steps(&store, &pubkey(12)).await, expected, "{db:?}");
    }
);

/// What the store says of one entity, without times (which differ between
/// two stores): its record's state, its progression and its events.
async fn story(store: &Store, id: &str) -> String {
    let request = store
        .get_account_request(id)
        .await
        .ok()
        .map(|r| (r.status, r.account_id));
    let account = store
        .get_account(id)
        .await
        .ok()
        .map(|a| (a.state, a.request_id));
    let session = store
        .get_session(id)
        .await
        .ok()
        .map(|s| (s.state, s.is_consumed, s.created_sessions));
    let progression = store.get_progression(id).await.ok().map(|p| {
        let steps: Vec<_> = p
            .history
            .iter()
            .map(|t| (t.from, t.to, t.slot, t.signature.clone()))
            .collect();
        (p.current_state, steps)
    });
    let query = EventQuery {
        entity_id: Some(id.to_string()),
        ..Default::default()
    };
    let events: Vec<_> = store
        .list_events(&query, Some(0), 1000, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_type, e.entity_id, e.slot, e.signature, e.payload))
        .collect();
    format!("{request:?}\n{account:?}\n{session:?}\n{progression:?}\n{events:?}")
}

backend_tests!(
    async fn a_batch_stores_what_the_same_records_written_one_by_one_store(db: Db) {
        let (Some((batched, _a)), Some((single, _b))) =
            (fresh_store(db).await, fresh_store(db).await)
        else {
            return;
        };
        // Already stored in both: a request, and an account a new session takes.
        for store in [&batched, &single] {
            store.upsert_account_request(&request(1)).await.unwrap();
            store.upsert_account(&account_record(30)).await.unwrap();
        }
        let consumed = SessionRecord {
            is_consumed: true,
            ..session(41, &[], "ns")
        };
        let writes = vec![
            ChainWrite::Request(request(2)),
            ChainWrite::Request(request(3)),
            ChainWrite::Request(request(1)),     // known: nothing new
            ChainWrite::Account(account(12, 2)), // names its request
            ChainWrite::Account(account_record(13)),
            ChainWrite::Session(session(40, &[30, 13], "ns")),
            ChainWrite::Session(consumed),
            ChainWrite::Consumption(ConsumptionRecord {
                consumed_session: pubkey(40),
                created_sessions: vec![pubkey(41)],
                transaction_signature: "sig-consume".into(),
                consumed_at_ms: 1_700_000_001_000,
                slot: Some(13),
            }),
        ];
        let changed = batched.write_chain_batch(&writes).await.unwrap();
        let mut one_by_one = 0;
        for write in &writes {
            one_by_one += usize::from(single.write_chain(write).await.unwrap());
        }
        assert_eq!(changed, one_by_one, "{db:?}");
        assert_eq!(changed, 7, "{db:?}: every write but the known request");
        for n in [1, 2, 3, 12, 13, 30, 40, 41] {
            let id = pubkey(n);
            assert_eq!(
                story(&batched, &id).await,
                story(&single, &id).await,
                "{db:?}: entity {n} differs"
            );
        }
        // Not two empty stories.
        let session = batched.get_session(&pubkey(40)).await.unwrap();
        assert!(session.is_consumed, "{db:?}");
        let taken = batched.get_account(&pubkey(13)).await.unwrap();
        assert_eq!(taken.state, LinearState::ConsumedSession, "{db:?}");
        // The batch again changes nothing.
        assert_eq!(
            batched.write_chain_batch(&writes).await.unwrap(),
            0,
            "{db:?}"
        );
    }
);

backend_tests!(
    async fn an_account_linked_to_its_request_late_is_in_the_requests_history(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        // The account is recorded before anything names its request (as a
        // pass may see it), then the link arrives.
        store.upsert_account_request(&request(1)).await.unwrap();
        store.upsert_account(&account_record(11)).await.unwrap();
        assert!(store.upsert_account(&account(11, 1)).await.unwrap());
        let query = EventQuery {
            entity_id: Some(pubkey(1)),
            ..Default::default()
        };
        let history = event_types(&store.list_events(&query, Some(0), 100, 0).await.unwrap());
        assert!(
            history.contains(&EventType::AccountInitialized),
            "{db:?}: the request's history holds its initialization: {history:?}"
        );
        let req = store.get_account_request(&pubkey(1)).await.unwrap();
        assert_eq!(req.status, RequestStatus::Initialized, "{db:?}");
    }
);
