//! The store against a real SQLite file and a real PostgreSQL database:
//! the same assertions on both.

use valence_lifecycle_api::v1::{AccountRequestStatus, EventType, LinearState};
use valence_lifecycle_server::{
    config::DatabaseConfig,
    store::{
        AccountRecord, AccountRequestRecord, ConsumptionRecord, EventQuery, SessionFilter,
        SessionRecord, Store,
    },
};

use crate::common::{pubkey, Db, TestDb, BOTH};

async fn open(db: Db) -> Option<(Store, TestDb)> {
    let test_db = TestDb::new(db).await?;
    let config = DatabaseConfig {
        url: test_db.url.clone(),
        ..DatabaseConfig::default()
    };
    Some((Store::connect(&config).await.unwrap(), test_db))
}

fn request(n: u8) -> AccountRequestRecord {
    AccountRequestRecord {
        id: pubkey(n),
        owner: pubkey(200),
        capabilities: vec!["transfer".into()],
        init_state_hash: "ab".repeat(32),
        created_at_ms: 1_700_000_000_000 + n as i64,
        slot: Some(10),
    }
}

fn account(n: u8, request: u8) -> AccountRecord {
    AccountRecord {
        id: pubkey(n),
        owner: pubkey(200),
        capabilities: vec!["transfer".into()],
        state_hash: "ab".repeat(32),
        is_active: true,
        created_at_ms: 1_700_000_000_100 + n as i64,
        request_id: pubkey(request),
        slot: Some(11),
        signature: "sig-init".into(),
    }
}

fn session(n: u8, accounts: &[u8], namespace: &str) -> SessionRecord {
    SessionRecord {
        id: pubkey(n),
        owner: pubkey(200),
        accounts: accounts.iter().map(|a| pubkey(*a)).collect(),
        namespace: namespace.into(),
        is_consumed: false,
        nonce: n as u64,
        created_at_ms: 1_700_000_000_200 + n as i64,
        metadata: vec![1, 2, 3],
        slot: Some(12),
    }
}

fn event_types(events: &[valence_lifecycle_api::v1::LifecycleEvent]) -> Vec<EventType> {
    events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect()
}

#[tokio::test]
async fn linear_progression_from_request_to_consumed_session() {
    for db in BOTH {
        let Some((store, _db)) = open(db).await else {
            continue;
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
        assert_eq!(
            req.status,
            AccountRequestStatus::Initialized as i32,
            "{db:?}"
        );
        assert_eq!(req.account_id, pubkey(11));
        let acc = store.get_account(&pubkey(11)).await.unwrap();
        assert_eq!(acc.state, LinearState::InSession as i32, "{db:?}");

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
        assert_eq!(s.state, LinearState::ConsumedSession as i32);
        assert_eq!(s.created_sessions, vec![pubkey(22)]);
        assert_eq!(s.metadata, vec![1, 2, 3]);

        // The account's history starts at its request and ends consumed.
        let p = store.get_progression(&pubkey(11)).await.unwrap();
        let states: Vec<i32> = p.history.iter().map(|t| t.to_state).collect();
        assert_eq!(
            states,
            vec![
                LinearState::AccountRequest as i32,
                LinearState::Account as i32,
                LinearState::InSession as i32,
                LinearState::ConsumedSession as i32
            ],
            "{db:?}"
        );
        assert_eq!(p.current_state, LinearState::ConsumedSession as i32);
        assert_eq!(p.history[1].signature, "sig-init");
        assert_eq!(p.history[1].slot, Some(11));
        assert_eq!(p.history[3].signature, "sig-consume");
    }
}

#[tokio::test]
async fn the_same_state_twice_changes_nothing_and_appends_nothing() {
    for db in BOTH {
        let Some((store, _db)) = open(db).await else {
            continue;
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
}

#[tokio::test]
async fn every_change_appends_its_events_in_order() {
    for db in BOTH {
        let Some((store, _db)) = open(db).await else {
            continue;
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
}

#[tokio::test]
async fn lists_filter_and_page() {
    for db in BOTH {
        let Some((store, _db)) = open(db).await else {
            continue;
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
            .list_sessions(&SessionFilter::default(), 100, 0)
            .await
            .unwrap();
        assert_eq!(live.len(), 5, "{db:?}");
        let all = store
            .list_sessions(
                &SessionFilter {
                    include_consumed: true,
                    ..Default::default()
                },
                100,
                0,
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
                100,
                0,
            )
            .await
            .unwrap();
        assert_eq!(odd.len(), 3);
        let page1 = store
            .list_sessions(&SessionFilter::default(), 2, 0)
            .await
            .unwrap();
        let page2 = store
            .list_sessions(&SessionFilter::default(), 2, 2)
            .await
            .unwrap();
        assert_eq!(page1.len(), 2);
        assert_eq!(page2.len(), 2);
        assert!(page1.iter().all(|a| page2.iter().all(|b| a.id != b.id)));
        assert!(
            page1[0].created_at.unwrap().seconds * 1000
                + i64::from(page1[0].created_at.unwrap().nanos / 1_000_000)
                > page2[0].created_at.unwrap().seconds * 1000
                    + i64::from(page2[0].created_at.unwrap().nanos / 1_000_000),
            "newest first"
        );
    }
}

#[tokio::test]
async fn pruning_keeps_the_newest_and_reports_the_oldest() {
    for db in BOTH {
        let Some((store, _db)) = open(db).await else {
            continue;
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
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        store.prune_events(1, 0).await.unwrap();
        assert_eq!(store.oldest_sequence().await.unwrap(), head);
        assert_eq!(store.head_sequence().await.unwrap(), head);
    }
}
