//! Shard leases and fencing at the store, on a real SQLite file and a real
//! PostgreSQL database: a writer whose epoch moved on writes nothing; rows
//! and events carry the shard; leases change owner only when free or run
//! out, each time with a new epoch.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use valence_lifecycle_server::store::{
    ChainWrite, EventQuery, SessionFilter, ShardFence, Store, StoreError,
};

use crate::common::{backend_tests, fresh_store, pubkey, request_record as request};

const SHARD: &str = "11111111111111111111111111111111";

/// A chain-work store for `SHARD` at `epoch`, counting its refusals.
fn fenced(store: &Store, epoch: i64) -> (Store, Arc<AtomicU64>) {
    let refused = Arc::new(AtomicU64::new(0));
    let count = refused.clone();
    let on_refused = Arc::new(move || {
        count.fetch_add(1, Ordering::Relaxed);
    });
    (
        store.for_shard(ShardFence::new(SHARD, epoch, on_refused)),
        refused,
    )
}

backend_tests!(
    async fn a_writer_whose_epoch_moved_on_writes_nothing(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        store.ensure_leases(&[SHARD.to_string()]).await.unwrap();
        let first = store
            .acquire_lease(SHARD, "replica-a", 60_000)
            .await
            .unwrap();
        let Some(first) = first else {
            panic!("{db:?}: a free lease is taken");
        };
        let (old, refused) = fenced(&store, first);
        assert!(old
            .write_chain(&ChainWrite::Request(request(1)))
            .await
            .unwrap());

        // The lease changes hands: released, then taken with a new epoch.
        store
            .release_lease(SHARD, "replica-a", first)
            .await
            .unwrap();
        let second = store
            .acquire_lease(SHARD, "replica-b", 60_000)
            .await
            .unwrap();
        assert_eq!(
            second,
            Some(first + 1),
            "{db:?}: every change of owner grows the epoch"
        );
        let head = store.head_sequence().await.unwrap();

        let stale = old.write_chain(&ChainWrite::Request(request(2))).await;
        assert!(
            matches!(stale, Err(StoreError::Fenced { held, current, .. }) if held == first && current == first + 1),
            "{db:?}: {stale:?}"
        );
        let batch = old
            .write_chain_batch(&[ChainWrite::Request(request(3))])
            .await;
        assert!(
            matches!(batch, Err(StoreError::Fenced { .. })),
            "{db:?}: {batch:?}"
        );
        assert_eq!(refused.load(Ordering::Relaxed), 2);
        assert_eq!(
            store.head_sequence().await.unwrap(),
            head,
            "{db:?}: nothing appended"
        );
        for n in [2, 3] {
            assert!(
                store.get_account_request(&pubkey(n)).await.is_err(),
                "{db:?}: request {n} not stored"
            );
        }

        // The new owner writes, and its rows and events carry the shard.
        let (new, _) = fenced(&store, first + 1);
        assert!(new
            .write_chain(&ChainWrite::Request(request(2)))
            .await
            .unwrap());
        assert_eq!(
            store.get_account_request(&pubkey(2)).await.unwrap().shard,
            SHARD
        );
        let query = EventQuery {
            shard: Some(SHARD.into()),
            ..Default::default()
        };
        let events = store.list_events(&query, Some(0), 100, 0).await.unwrap();
        assert!(
            events.len() >= 4,
            "{db:?}: both requests' events: {}",
            events.len()
        );
        assert!(events.iter().all(|e| e.shard == SHARD), "{db:?}");
        let other = EventQuery {
            shard: Some("another".into()),
            ..Default::default()
        };
        assert!(store
            .list_events(&other, Some(0), 100, 0)
            .await
            .unwrap()
            .is_empty());
        let listed = store
            .list_account_requests(None, Some(SHARD), None, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 2, "{db:?}");
        let sessions = SessionFilter {
            shard: Some(SHARD.into()),
            ..Default::default()
        };
        assert!(store
            .list_sessions(&sessions, None, 10)
            .await
            .unwrap()
            .is_empty());
    }
);

backend_tests!(
    async fn a_live_lease_is_renewed_by_its_owner_only(db: Db) {
        let Some((store, _db)) = fresh_store(db).await else {
            return;
        };
        store.ensure_leases(&[SHARD.to_string()]).await.unwrap();
        let epoch = store
            .acquire_lease(SHARD, "replica-a", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert!(store
            .renew_lease(SHARD, "replica-a", epoch, 60_000, (7, 9))
            .await
            .unwrap());
        assert!(!store
            .renew_lease(SHARD, "replica-b", epoch, 60_000, (7, 9))
            .await
            .unwrap());
        assert!(!store
            .renew_lease(SHARD, "replica-a", epoch - 1, 60_000, (7, 9))
            .await
            .unwrap());
        let row = &store.leases().await.unwrap()[0];
        assert!(row.is_live() && row.owner == "replica-a", "{db:?}: {row:?}");
        assert_eq!((row.last_slot, row.head_slot), (7, 9));
        let live = store.replica_heartbeat("replica-a", 60_000).await.unwrap();
        assert_eq!(live, ["replica-a"]);
    }
);
