//! Paging (AIP-158) on a real server: keyset page tokens hold while rows
//! are inserted between pages, are bound to their list and filter, and
//! anything else sent as a token is INVALID_ARGUMENT (400 over REST)
//! naming `page_token`; page sizes above 1000 are served as 1000.

use std::{collections::HashMap, future::Future, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use valence_lifecycle_api::v1::{
    ListAccountRequestsRequest, ListAccountsRequest, ListRulesRequest, ListSessionsRequest,
};
use valence_lifecycle_server::store::{
    AccountRecord, AccountRequestRecord, SessionRecord, Store, StoreResult,
};

use crate::common::{
    account_record, backend_tests, eventually, open_store, pubkey, request_record, session_record,
    test_config, Db, TestDb, TestServer, SEED_RULE,
};

/// Rows seeded before paging: pairs share a creation time, so page
/// boundaries fall between rows the id alone orders.
const SEEDED: u16 = 23;
/// Creation times of the seeded rows start here; rows inserted while
/// paging are newer than all of them.
const BASE_MS: i64 = 1_700_000_000_000;

/// The three newest-first lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum List {
    Requests,
    Accounts,
    Sessions,
}

/// A valid base58 public key from a 16-bit number (`pubkey` has 255).
fn key(n: u16) -> String {
    let mut bytes = [0u8; 32];
    bytes[..2].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 9;
    bs58::encode(bytes).into_string()
}

/// Writes row `id` of `list`, created at `created_at_ms`, once.
async fn try_insert(store: &Store, list: List, id: &str, created_at_ms: i64) -> StoreResult<bool> {
    let id = id.to_string();
    match list {
        List::Requests => {
            store
                .upsert_account_request(&AccountRequestRecord {
                    id,
                    created_at_ms,
                    ..request_record(1)
                })
                .await
        }
        List::Accounts => {
            store
                .upsert_account(&AccountRecord {
                    id,
                    created_at_ms,
                    ..account_record(1)
                })
                .await
        }
        List::Sessions => {
            store
                .upsert_session(&SessionRecord {
                    id,
                    created_at_ms,
                    ..session_record(1, &[], "ns")
                })
                .await
        }
    }
}

/// Writes row `id` of `list`, created at `created_at_ms`. On SQLite a
/// second process's write transaction can find the server's in its way
/// ("database is locked"); it is tried again until it is written.
async fn insert(store: &Store, list: List, id: String, created_at_ms: i64) {
    eventually(
        Duration::from_secs(10),
        &format!("{list:?} {id} written"),
        || async {
            match try_insert(store, list, &id, created_at_ms).await {
                Ok(written) => written,
                Err(e) if e.to_string().contains("database is locked") => false,
                Err(e) => panic!("writing {list:?} {id}: {e}"),
            }
        },
    )
    .await;
}

/// Seeds [`SEEDED`] rows of `list`; their ids.
async fn seed(store: &Store, list: List) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..SEEDED {
        insert(store, list, key(n), BASE_MS + i64::from(n / 2)).await;
        ids.push(key(n));
    }
    ids
}

/// Another writer: each time it is asked, it writes two rows of `list`
/// newer than any before, and answers once they are committed.
fn inserter(store: Store, list: List) -> mpsc::Sender<oneshot::Sender<()>> {
    let (asks, mut asked) = mpsc::channel::<oneshot::Sender<()>>(1);
    tokio::spawn(async move {
        let mut n = 10_000u16;
        while let Some(done) = asked.recv().await {
            for _ in 0..2 {
                n += 1;
                insert(&store, list, key(n), BASE_MS + 1_000_000 + i64::from(n)).await;
            }
            let _ = done.send(());
        }
    });
    asks
}

/// Pages through a list with `fetch` (a token in, the page's ids and the
/// next token out), having `inserter` write rows between every two pages;
/// every id listed, in order.
async fn page_through<F, Fut>(
    mut fetch: F,
    inserter: &mpsc::Sender<oneshot::Sender<()>>,
) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = (Vec<String>, String)>,
{
    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let (page, next) = fetch(token).await;
        ids.extend(page);
        if next.is_empty() {
            return ids;
        }
        let (done, written) = oneshot::channel();
        inserter.send(done).await.unwrap();
        written.await.unwrap();
        token = next;
    }
    panic!("no last page after 100 pages");
}

/// Every seeded id listed exactly once, and no id listed twice.
fn assert_each_once(what: &str, seeded: &[String], listed: &[String]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in listed {
        *seen.entry(id).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{what}: rows listed twice: {repeated:?}"
    );
    let missing: Vec<_> = seeded
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "{what}: rows never listed: {missing:?}");
}

/// A fresh database and a store of its own on it: the other writer,
/// seeding before the server starts and inserting while it serves.
async fn database(db: Db) -> Option<(TestDb, Store)> {
    let test_db = TestDb::new(db).await?;
    let store = open_store(&test_db.url).await;
    Some((test_db, store))
}

/// A server on `test_db`.
async fn start(test_db: TestDb) -> TestServer {
    let config = test_config(&test_db.url);
    TestServer::start_with(test_db, config).await
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // ListAccountRequests, ListAccounts and ListSessions page newest first;
    // rows inserted between two pages (newer than every row listed) shift
    // no row into the next page: every row that existed at the start is
    // listed exactly once (offset tokens repeated one row per insert).
    async fn grpc_pages_hold_while_rows_are_inserted(db: Db) {
        let Some((test_db, store)) = database(db).await else {
            return;
        };
        let lists = [List::Requests, List::Accounts, List::Sessions];
        let mut seeded = HashMap::new();
        for list in lists {
            seeded.insert(list, seed(&store, list).await);
        }
        let server = start(test_db).await;
        let client = server.lifecycle().await;
        for list in lists {
            let seeded = &seeded[&list];
            let writer = inserter(store.clone(), list);
            let fetch = |page_token: String| {
                let mut client = client.clone();
                async move {
                    match list {
                        List::Requests => {
                            let page = client
                                .list_account_requests(ListAccountRequestsRequest {
                                    page_size: 5,
                                    page_token,
                                    ..Default::default()
                                })
                                .await
                                .unwrap()
                                .into_inner();
                            let ids = page.requests.into_iter().map(|r| r.id).collect();
                            (ids, page.next_page_token)
                        }
                        List::Accounts => {
                            let page = client
                                .list_accounts(ListAccountsRequest {
                                    page_size: 5,
                                    page_token,
                                    ..Default::default()
                                })
                                .await
                                .unwrap()
                                .into_inner();
                            let ids = page.accounts.into_iter().map(|a| a.id).collect();
                            (ids, page.next_page_token)
                        }
                        List::Sessions => {
                            let page = client
                                .list_sessions(ListSessionsRequest {
                                    page_size: 5,
                                    page_token,
                                    ..Default::default()
                                })
                                .await
                                .unwrap()
                                .into_inner();
                            let ids = page.sessions.into_iter().map(|s| s.id).collect();
                            (ids, page.next_page_token)
                        }
                    }
                }
            };
            let listed = page_through(fetch, &writer).await;
            assert_each_once(&format!("{db:?} {list:?}"), seeded, &listed);
            assert_eq!(
                listed.len(),
                seeded.len(),
                "{db:?} {list:?}: rows newer than the first page are not listed"
            );
        }
        assert!(server.stop().await);
    }
);

/// Tokens no server issued: offsets as the old tokens were, numbers past
/// any range, text that is not base64 and a huge string.
fn garbage_tokens() -> Vec<String> {
    vec![
        "0".into(),
        "100".into(),
        "18446744073709551615".into(),
        "abc".into(),
        "not a token!".into(),
        "AAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "A".repeat(10_000),
    ]
}

/// Asserts `err` is INVALID_ARGUMENT naming page_token, in a short message.
fn assert_refused_token(what: &str, err: tonic::Status) {
    assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    assert!(
        err.message().contains("page_token"),
        "{what}: {}",
        err.message()
    );
    assert!(err.message().len() < 300, "{what}: the token is not echoed");
}

backend_tests!(
    // A token answers only the list and filter it was issued for (another
    // status, owner, namespace, consumed flag or list is INVALID_ARGUMENT
    // naming page_token, as is anything the server never issued), while the
    // same filter with any page size goes on.
    async fn grpc_tokens_are_bound_to_their_list_and_filter(db: Db) {
        let Some((test_db, store)) = database(db).await else {
            return;
        };
        for n in 0..3 {
            insert(&store, List::Requests, key(n), BASE_MS + i64::from(n)).await;
            insert(&store, List::Accounts, key(n), BASE_MS + i64::from(n)).await;
            let namespace = if n == 2 { "b" } else { "a" };
            store
                .upsert_session(&SessionRecord {
                    id: key(n),
                    ..session_record(1, &[], namespace)
                })
                .await
                .unwrap();
        }
        let server = start(test_db).await;
        for n in 1..=3 {
            let rule = SEED_RULE.replace("rule-1", &format!("rule-{n}"));
            let response = reqwest::Client::new()
                .post(format!("{}/rules", server.http()))
                .header("content-type", "application/json")
                .body(rule)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
        let mut lifecycle = server.lifecycle().await;
        let mut rules = server.rules().await;
        use valence_lifecycle_api::v1::AccountRequestStatus::{Failed, Pending};

        let requests = |status: i32, page_token: String| ListAccountRequestsRequest {
            shard: Default::default(),
            page_size: 1,
            page_token,
            status,
        };
        let first = lifecycle
            .list_account_requests(requests(Pending as i32, String::new()))
            .await
            .unwrap()
            .into_inner();
        let token = first.next_page_token;
        assert!(!token.is_empty());
        let second = lifecycle
            .list_account_requests(ListAccountRequestsRequest {
                page_size: 5000,
                ..requests(Pending as i32, token.clone())
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.requests.len(), 2, "{db:?}: the page size may change");
        assert_ne!(second.requests[0].id, first.requests[0].id);
        for status in [Failed as i32, 0] {
            let err = lifecycle
                .list_account_requests(requests(status, token.clone()))
                .await
                .unwrap_err();
            assert_refused_token(&format!("{db:?} requests, status {status}"), err);
        }
        let err = lifecycle
            .list_accounts(ListAccountsRequest {
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_refused_token(&format!("{db:?} a request token on ListAccounts"), err);

        let accounts = |owner: String, page_token: String| ListAccountsRequest {
            shard: Default::default(),
            page_size: 1,
            page_token,
            owner,
        };
        let token = lifecycle
            .list_accounts(accounts(pubkey(200), String::new()))
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        assert!(lifecycle
            .list_accounts(accounts(pubkey(200), token.clone()))
            .await
            .is_ok());
        for owner in [pubkey(201), String::new()] {
            let err = lifecycle
                .list_accounts(accounts(owner.clone(), token.clone()))
                .await
                .unwrap_err();
            assert_refused_token(&format!("{db:?} accounts, owner {owner:?}"), err);
        }
        let err = lifecycle
            .list_sessions(ListSessionsRequest {
                page_token: token.clone(),
                owner: pubkey(200),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_refused_token(&format!("{db:?} an account token on ListSessions"), err);

        let sessions =
            |namespace: &str, include_consumed, page_token: String| ListSessionsRequest {
                shard: Default::default(),
                page_size: 1,
                page_token,
                include_consumed,
                owner: String::new(),
                namespace: namespace.into(),
            };
        let token = lifecycle
            .list_sessions(sessions("a", false, String::new()))
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        let next = lifecycle
            .list_sessions(sessions("a", false, token.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next.sessions.len(), 1);
        assert!(
            next.next_page_token.is_empty(),
            "{db:?}: the last page has no token"
        );
        for (namespace, consumed) in [("b", false), ("a", true), ("", false)] {
            let err = lifecycle
                .list_sessions(sessions(namespace, consumed, token.clone()))
                .await
                .unwrap_err();
            assert_refused_token(&format!("{db:?} sessions {namespace:?} {consumed}"), err);
        }

        let token = rules
            .list_rules(ListRulesRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        let rest: Vec<_> = rules
            .list_rules(ListRulesRequest {
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .rules
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(rest, ["rule-2", "rule-3"], "{db:?}");
        let err = rules
            .list_rules(ListRulesRequest {
                page_token: token.clone(),
                enabled_only: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_refused_token(&format!("{db:?} rules, enabled only"), err);

        for bad in garbage_tokens() {
            let what = format!("{db:?} {:.24}", bad);
            let err = lifecycle
                .list_account_requests(requests(0, bad.clone()))
                .await
                .unwrap_err();
            assert_refused_token(&what, err);
            let err = lifecycle
                .list_accounts(accounts(String::new(), bad.clone()))
                .await
                .unwrap_err();
            assert_refused_token(&what, err);
            let err = lifecycle
                .list_sessions(sessions("", false, bad.clone()))
                .await
                .unwrap_err();
            assert_refused_token(&what, err);
            let err = rules
                .list_rules(ListRulesRequest {
                    page_token: bad.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_refused_token(&what, err);
        }
        assert!(server.stop().await);
    }
);

/// GET `<http><path>` with `query`: the status and the JSON body.
async fn get(server: &TestServer, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.http()))
        .query(query)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Asserts a REST answer is 400 with the JSON error naming page_token.
fn assert_rest_refused(what: &str, (status, body): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert_eq!(body["code"], "InvalidArgument", "{what}: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("page_token"), "{what}: {body}");
    assert!(error.len() < 300, "{what}: the token is not echoed");
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The same over REST: GET /account-requests pages hold while rows are
    // inserted, tokens are bound to their list and filter (and shared with
    // gRPC for the same filter), and garbage is 400 with the JSON error
    // naming page_token.
    async fn rest_pages_hold_and_foreign_or_malformed_tokens_are_400(db: Db) {
        let Some((test_db, store)) = database(db).await else {
            return;
        };
        let seeded = seed(&store, List::Requests).await;
        let server = start(test_db).await;
        let writer = inserter(store.clone(), List::Requests);
        let rest = &server;
        let fetch = |token: String| async move {
            let (status, body) = get(
                rest,
                "/account-requests",
                &[
                    ("page_size", "4"),
                    ("status", "pending"),
                    ("page_token", &token),
                ],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let ids = body["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            (ids, body["nextPageToken"].as_str().unwrap().to_string())
        };
        let listed = page_through(fetch, &writer).await;
        assert_each_once(&format!("{db:?} GET /account-requests"), &seeded, &listed);

        let (_, first) = get(
            &server,
            "/account-requests",
            &[("page_size", "2"), ("status", "pending")],
        )
        .await;
        let token = first["nextPageToken"].as_str().unwrap().to_string();
        for (path, status) in [
            ("/account-requests", "failed"),
            ("/account-requests", ""),
            ("/accounts", ""),
            ("/sessions", ""),
        ] {
            let reply = get(&server, path, &[("status", status), ("page_token", &token)]).await;
            assert_rest_refused(&format!("{db:?} {path} status {status:?}"), reply);
        }
        // The same filter by its other name, and over gRPC: the same list.
        let (status, body) = get(
            &server,
            "/account-requests",
            &[
                ("status", "ACCOUNT_REQUEST_STATUS_PENDING"),
                ("page_token", &token),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let over_grpc = server
            .lifecycle()
            .await
            .list_account_requests(ListAccountRequestsRequest {
                page_token: token.clone(),
                status: valence_lifecycle_api::v1::AccountRequestStatus::Pending as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            body["requests"].as_array().unwrap().len(),
            over_grpc.requests.len()
        );

        for bad in garbage_tokens() {
            for path in ["/accounts", "/account-requests", "/sessions", "/rules"] {
                let reply = get(&server, path, &[("page_token", &bad)]).await;
                assert_rest_refused(&format!("{db:?} {path} {:.24}", bad), reply);
            }
        }
        assert!(server.stop().await);
    }
);

backend_tests!(
    // page_size above 1000 is served as 1000 (documented in the proto
    // comments and the README), and a page that ends the list carries no
    // token, even when it is full.
    async fn page_sizes_above_1000_are_served_as_1000(db: Db) {
        let Some((test_db, store)) = database(db).await else {
            return;
        };
        for n in 0..1000 {
            insert(&store, List::Accounts, key(n), BASE_MS + i64::from(n)).await;
        }
        let server = start(test_db).await;
        let mut lifecycle = server.lifecycle().await;
        let all = |page_token: String| ListAccountsRequest {
            page_size: 5000,
            page_token,
            ..Default::default()
        };
        let page = lifecycle
            .list_accounts(all(String::new()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.accounts.len(), 1000, "{db:?}");
        assert!(
            page.next_page_token.is_empty(),
            "{db:?}: exactly the whole list"
        );
        let (status, body) = get(&server, "/accounts", &[("page_size", "5000")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["accounts"].as_array().unwrap().len(),
            1000,
            "{db:?} REST"
        );
        assert_eq!(body["nextPageToken"], "");

        insert(&store, List::Accounts, key(1000), BASE_MS - 1).await;
        let page = lifecycle
            .list_accounts(all(String::new()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.accounts.len(), 1000, "{db:?}: at most 1000");
        assert!(!page.next_page_token.is_empty(), "{db:?}: one more follows");
        let last = lifecycle
            .list_accounts(all(page.next_page_token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(last.accounts.len(), 1);
        assert_eq!(
            last.accounts[0].id,
            key(1000),
            "{db:?}: the oldest comes last"
        );
        assert!(last.next_page_token.is_empty());
        let err = lifecycle
            .list_accounts(ListAccountsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("page_size"), "{}", err.message());
        assert!(server.stop().await);
    }
);
