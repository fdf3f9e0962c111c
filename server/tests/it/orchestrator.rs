//! The orchestrator: every condition matching and not matching (CEL
//! included), bad rules rejected with nothing stored, EvaluateRule dry runs,
//! AUTO_PROGRESS off reporting each match once (also across a restart),
//! signed webhooks retried after a 500, chain actions failing clearly
//! without a chain, and (with the embedded chain) the seed rule consuming a
//! session on Surfnet and a crash in the middle of an action not repeating it.

use std::{collections::BTreeSet, time::Duration};

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use tonic::Code;
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{
        evaluate_rule_request::Target, lifecycle_event::Payload, CreateRuleRequest,
        EvaluateRuleRequest, EventType, GetRuleRequest, LifecycleEvent, ListEventsRequest,
        ProgressionRule,
    },
};
use valence_lifecycle_server::{config::Config, store::AccountRecord};

use crate::common::{
    account_record, backend_tests, caps, eventually, metric, open_store, pubkey,
    session_record as session, test_config, Db, TestDb, TestReceiver, TestServer,
};

fn seed_rule(id: &str, condition: &str, action: &str) -> ProgressionRule {
    let json = format!(
        r#"{{"id":"{id}","name":"rule {id}","condition":{condition},"action":{action},"enabled":true}}"#
    );
    serde_json::from_str::<SeedRule>(&json).unwrap().into()
}

const CONSUME: &str =
    r#"{"ConsumeAndCreate":[{"account_indices":[0,1],"namespace":"recycled","metadata":[]}]}"#;

/// Account `pubkey(n)` with `capabilities` and the state hash `[n; 32]`.
fn account(n: u8, capabilities: &[&str]) -> AccountRecord {
    AccountRecord {
        capabilities: caps(capabilities),
        state_hash: hex::encode([n; 32]),
        ..account_record(n)
    }
}

async fn events_of(server: &TestServer, kind: EventType) -> Vec<LifecycleEvent> {
    server
        .lifecycle()
        .await
        .list_events(ListEventsRequest {
            limit: 1000,
            event_type: kind as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn matched(server: &TestServer) -> Vec<(String, String, bool, String)> {
    events_of(server, EventType::RuleMatched)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(Payload::RuleMatched(m)) => {
                Some((m.rule_id, m.session_id, m.dry_run, m.description))
            }
            _ => None,
        })
        .collect()
}

async fn outcomes(
    server: &TestServer,
    kind: EventType,
) -> Vec<(String, String, String, String, u32)> {
    events_of(server, kind)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(Payload::ActionExecuted(o)) | Some(Payload::ActionFailed(o)) => {
                Some((o.rule_id, o.session_id, o.detail, o.error, o.attempt))
            }
            _ => None,
        })
        .collect()
}

fn fast(mut c: Config) -> Config {
    c.lifecycle.rule_tick_secs = 1;
    c.retry.initial_delay_ms = 100;
    c.retry.max_delay_ms = 1_000;
    c.retry.max_retries = 4;
    c
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_condition_matches_and_misses_and_each_match_is_reported_once(db: Db) {
        let Some(test_db) = TestDb::new(db).await else {
            return;
        };
        let url = test_db.url.clone();
        // What the chain would hold, stored before the server starts.
        let store = open_store(&url).await;
        let (s1, s2) = (pubkey(11), pubkey(12));
        store
            .upsert_account(&account(1, &["transfer", "vote"]))
            .await
            .unwrap();
        store
            .upsert_account(&account(2, &["transfer"]))
            .await
            .unwrap();
        store.upsert_account(&account(3, &["vote"])).await.unwrap();
        store
            .upsert_session(&session(11, &[1, 2], "alpha"))
            .await
            .unwrap();
        store
            .upsert_session(&session(12, &[1, 3], "beta"))
            .await
            .unwrap();
        store.close().await;
        let server = TestServer::start_with(test_db, fast(test_config(&url))).await;
        // The aggregate: sha256 over the members' state hashes in order.
        let mut members = vec![1u8; 32];
        members.extend([3u8; 32]);
        let s2_hash = hex::encode(Sha256::digest(&members));

        let mut rules = server.rules().await;
        // A bad CEL expression: rejected naming the field, nothing stored.
        let bad = rules
            .create_rule(CreateRuleRequest {
                rule: Some(seed_rule(
                    "bad",
                    r#"{"CustomPredicate":"session.nonce >"}"#,
                    CONSUME,
                )),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(
            bad.message().contains("rule.condition.custom_predicate"),
            "{}",
            bad.message()
        );
        let unknown = rules
            .create_rule(CreateRuleRequest {
                rule: Some(seed_rule(
                    "bad",
                    r#"{"CustomPredicate":"sesion.nonce > 0"}"#,
                    CONSUME,
                )),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::InvalidArgument);
        assert!(unknown.message().contains("unknown variable"));
        let rest = reqwest::Client::new()
            .post(format!("{}/rules", server.http()))
            .header("content-type", "application/json")
            .body(r#"{"id":"bad","name":"n","condition":{"CustomPredicate":"1 +"},"action":{"NotifyWebhook":"http://127.0.0.1:1/x"},"enabled":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), 400);
        assert!(rest
            .text()
            .await
            .unwrap()
            .contains("rule.condition.custom_predicate"));
        let missing = rules
            .get_rule(GetRuleRequest { id: "bad".into() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "nothing was stored");

        // Dry runs before any rule is stored: an inline rule and a miss.
        let dry = rules
            .evaluate_rule(EvaluateRuleRequest {
                target: Some(Target::Rule(seed_rule(
                    "inline",
                    r#"{"AllAccountsHaveCapability":"vote"}"#,
                    CONSUME,
                ))),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dry.sessions_evaluated, 2);
        let ids: Vec<&str> = dry.matches.iter().map(|m| m.session_id.as_str()).collect();
        assert_eq!(ids, vec![s2.as_str()], "only s2's accounts all vote");
        assert_eq!(dry.matches[0].action_kind, "consume_and_create");
        assert!(dry.matches[0].description.contains("recycled"));
        let idle_long = rules
            .evaluate_rule(EvaluateRuleRequest {
                target: Some(Target::Rule(seed_rule(
                    "inline",
                    r#"{"SessionIdleFor":3600}"#,
                    CONSUME,
                ))),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(idle_long.matches.is_empty(), "nobody is idle for an hour");
        let bad_inline = rules
            .evaluate_rule(EvaluateRuleRequest {
                target: Some(Target::Rule(seed_rule(
                    "inline",
                    r#"{"CustomPredicate":"("}"#,
                    CONSUME,
                ))),
                limit: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(bad_inline.code(), Code::InvalidArgument);
        let no_target = rules
            .evaluate_rule(EvaluateRuleRequest {
                target: None,
                limit: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(no_target.code(), Code::InvalidArgument);

        let webhook = r#"{"NotifyWebhook":"http://127.0.0.1:9/never"}"#;
        let hash_condition = format!(r#"{{"StateHashMatches":"{s2_hash}"}}"#);
        let stored = [
            ("cap", r#"{"AllAccountsHaveCapability":"transfer"}"#.to_string()),
            ("idle", r#"{"SessionIdleFor":2}"#.to_string()),
            ("hash", hash_condition),
            (
                "cel",
                r#"{"CustomPredicate":"session.namespace == 'alpha' && accounts.all(a, 'transfer' in a.capabilities) && session.account_count == 2"}"#.to_string(),
            ),
            (
                "cel-time",
                r#"{"CustomPredicate":"idle_seconds >= 1 && session.namespace == 'beta'"}"#.to_string(),
            ),
            ("never", r#"{"AllAccountsHaveCapability":"admin"}"#.to_string()),
        ];
        for (id, condition) in &stored {
            rules
                .create_rule(CreateRuleRequest {
                    rule: Some(seed_rule(id, condition, webhook)),
                })
                .await
                .unwrap();
        }
        let stored_dry = rules
            .evaluate_rule(EvaluateRuleRequest {
                target: Some(Target::Id("hash".into())),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = stored_dry
            .matches
            .iter()
            .map(|m| m.session_id.as_str())
            .collect();
        assert_eq!(ids, vec![s2.as_str()]);
        assert_eq!(stored_dry.matches[0].action_kind, "notify_webhook");
        // The same dry run through lifecyclectl.
        let endpoint = format!("http://{}", server.grpc);
        let (code, stdout, stderr) = crate::cli::run(
            &crate::cli::lifecyclectl(),
            &["--json", "rules", "evaluate", "cap"],
            &[("VALENCE_ENDPOINT", endpoint.as_str())],
        )
        .await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let first = &answer["matches"][0];
        let session_id = first.get("session_id").or(first.get("sessionId"));
        assert_eq!(session_id, Some(&serde_json::json!(s1)), "{stdout}");
        assert_eq!(answer["matches"].as_array().unwrap().len(), 1, "{stdout}");

        let expected: BTreeSet<(String, String)> = [
            ("cap", &s1),
            ("idle", &s1),
            ("idle", &s2),
            ("hash", &s2),
            ("cel", &s1),
            ("cel-time", &s2),
        ]
        .into_iter()
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect();
        let pairs = |m: &[(String, String, bool, String)]| -> BTreeSet<(String, String)> {
            m.iter()
                .map(|(r, s, _, _)| (r.clone(), s.clone()))
                .collect()
        };
        eventually(Duration::from_secs(20), "all six matches", || async {
            pairs(&matched(&server).await) == expected
        })
        .await;
        // Two more ticks: nothing is reported twice, nothing was executed.
        // (The sleep is the observation window: there is no event to await
        // for something that must not happen.)
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let reported = matched(&server).await;
        assert_eq!(reported.len(), 6, "{reported:?}");
        assert!(reported
            .iter()
            .all(|(_, _, dry_run, d)| *dry_run && !d.is_empty()));
        assert!(outcomes(&server, EventType::ActionExecuted)
            .await
            .is_empty());
        assert!(outcomes(&server, EventType::ActionFailed).await.is_empty());
        assert_eq!(
            metric(&server, "valence_progression_rules_matched_total").await,
            6.0
        );
        assert!(metric(&server, "valence_progression_rules_evaluated_total").await >= 12.0);
        assert_eq!(
            metric(
                &server,
                "valence_rule_actions_total{kind=\"notify_webhook\",outcome=\"reported\"}"
            )
            .await,
            6.0
        );

        // Across a restart the matches are remembered; a session that
        // arrived while the server was down is evaluated at start.
        let (clean, test_db) = server.stop_and_keep().await;
        assert!(clean);
        let s3 = pubkey(13);
        let store = open_store(&url).await;
        store
            .upsert_session(&session(13, &[2], "alpha"))
            .await
            .unwrap();
        store.close().await;
        let server = TestServer::start_with(test_db, fast(test_config(&url))).await;
        let mut expected = expected;
        expected.insert(("cap".to_string(), s3.clone()));
        expected.insert(("idle".to_string(), s3.clone()));
        eventually(
            Duration::from_secs(10),
            "the new session matched",
            || async { pairs(&matched(&server).await) == expected },
        )
        .await;
        // Observation window, as above: three ticks re-report nothing.
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        let reported = matched(&server).await;
        assert_eq!(
            reported.len(),
            8,
            "reported once across a restart: {reported:?}"
        );
        assert_eq!(pairs(&reported), expected);
        assert!(server.stop().await);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_are_signed_retried_after_a_500_and_chain_actions_fail_clearly_without_a_chain() {
    // 500 to the first request, 200 after.
    let receiver = TestReceiver::start(|n| {
        if n == 1 {
            http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            http::StatusCode::OK
        }
    })
    .await;
    let test_db = TestDb::new(Db::Sqlite).await.unwrap();
    let url = test_db.url.clone();
    // The session, stored before the server starts.
    let s1 = pubkey(11);
    let store = open_store(&url).await;
    store
        .upsert_account(&account(1, &["transfer"]))
        .await
        .unwrap();
    store
        .upsert_session(&session(11, &[1], "alpha"))
        .await
        .unwrap();
    store.close().await;
    let mut config = fast(test_config(&url));
    config.lifecycle.auto_progress = true;
    config.lifecycle.webhook_secret = "webhook-secret-for-tests".into();
    let server = TestServer::start_with(test_db, config).await;
    let mut rules = server.rules().await;
    let hook = format!(r#"{{"NotifyWebhook":"{}"}}"#, receiver.url);
    let bundle = format!(
        r#"{{"ExecuteBundle":{{"operations":[{{"function_hash":"{}","args_template":"{{session_id}}"}}]}}}}"#,
        "ab".repeat(32)
    );
    for (id, action) in [
        ("hook", hook.as_str()),
        ("consume", CONSUME),
        ("bundle", &bundle),
    ] {
        rules
            .create_rule(CreateRuleRequest {
                rule: Some(seed_rule(
                    id,
                    r#"{"AllAccountsHaveCapability":"transfer"}"#,
                    action,
                )),
            })
            .await
            .unwrap();
    }

    eventually(Duration::from_secs(20), "the webhook delivered", || async {
        !outcomes(&server, EventType::ActionExecuted)
            .await
            .is_empty()
    })
    .await;
    let executed = outcomes(&server, EventType::ActionExecuted).await;
    assert_eq!(executed.len(), 1);
    let (rule, sess, detail, error, attempt) = &executed[0];
    assert_eq!((rule.as_str(), sess.as_str()), ("hook", s1.as_str()));
    assert_eq!(detail, "HTTP 200");
    assert!(error.is_empty());
    assert_eq!(*attempt, 2, "the 500 was retried once");

    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    let delivery = seen[0].0["x-valence-delivery"].clone();
    for (headers, body) in &seen {
        assert_eq!(
            headers["x-valence-delivery"], delivery,
            "same delivery id on retry"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"webhook-secret-for-tests").unwrap();
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-valence-signature"].to_str().unwrap(), expected);
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["session"]["id"], s1.as_str());
        assert_eq!(json["rule"]["id"], "hook");
        assert_eq!(json["session"]["namespace"], "alpha");
        assert_eq!(json["delivery_id"], delivery.to_str().unwrap());
    }

    eventually(
        Duration::from_secs(10),
        "both chain actions failed",
        || async { outcomes(&server, EventType::ActionFailed).await.len() == 2 },
    )
    .await;
    for (rule, sess, _, error, _) in outcomes(&server, EventType::ActionFailed).await {
        assert!(rule == "consume" || rule == "bundle");
        assert_eq!(sess, s1);
        assert!(error.contains("no chain is configured"), "{error}");
    }
    let m = matched(&server).await;
    assert_eq!(m.len(), 3);
    assert!(m.iter().all(|(_, _, dry_run, _)| !dry_run));
    assert_eq!(
        metric(
            &server,
            "valence_rule_actions_total{kind=\"notify_webhook\",outcome=\"retried\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "valence_rule_actions_total{kind=\"notify_webhook\",outcome=\"executed\"}"
        )
        .await,
        1.0
    );
    // Nothing more arrives later: the delivery ended. (The sleep is the
    // observation window for something that must not happen.)
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.hits(), 2);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_action_not_finished_within_the_consumption_timeout_expires() {
    // A receiver that always fails.
    let receiver = TestReceiver::start(|_| http::StatusCode::SERVICE_UNAVAILABLE).await;
    let test_db = TestDb::new(Db::Sqlite).await.unwrap();
    let url = test_db.url.clone();
    // The session, stored before the server starts.
    let store = open_store(&url).await;
    store
        .upsert_account(&account(1, &["transfer"]))
        .await
        .unwrap();
    store
        .upsert_session(&session(11, &[1], "alpha"))
        .await
        .unwrap();
    store.close().await;
    let mut config = fast(test_config(&url));
    config.lifecycle.auto_progress = true;
    config.lifecycle.consumption_timeout_secs = 2;
    config.retry.max_retries = 1_000;
    config.retry.initial_delay_ms = 200;
    config.retry.max_delay_ms = 200;
    let server = TestServer::start_with(test_db, config).await;
    let hook = format!(r#"{{"NotifyWebhook":"{}"}}"#, receiver.url);
    server
        .rules()
        .await
        .create_rule(CreateRuleRequest {
            rule: Some(seed_rule(
                "hook",
                r#"{"AllAccountsHaveCapability":"transfer"}"#,
                &hook,
            )),
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "the action expired", || async {
        !outcomes(&server, EventType::ActionFailed).await.is_empty()
    })
    .await;
    let failed = outcomes(&server, EventType::ActionFailed).await;
    assert_eq!(failed.len(), 1);
    assert!(failed[0].3.contains("CONSUMPTION_TIMEOUT"), "{failed:?}");
    assert!(failed[0].4 >= 2, "it was retried until then");
    assert_eq!(
        metric(
            &server,
            "valence_rule_actions_total{kind=\"notify_webhook\",outcome=\"expired\"}"
        )
        .await,
        1.0
    );
    let after = receiver.hits();
    // Observation window for something that must not happen.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(receiver.hits(), after, "nothing is sent after expiry");
    assert!(outcomes(&server, EventType::ActionExecuted)
        .await
        .is_empty());
    assert!(server.stop().await);
}

#[cfg(feature = "embedded-chain")]
mod on_chain {
    use std::sync::atomic::Ordering;

    use solana_sdk::{pubkey::Pubkey, signature::Signer as _};
    use valence_lifecycle_api::v1::{
        lifecycle_service_client::LifecycleServiceClient, rule_service_client::RuleServiceClient,
        GetSessionRequest,
    };
    use valence_lifecycle_server::{
        chain::codec::{self, Record},
        orchestrator::actions::ConsumeAddresses,
    };

    use super::*;
    use crate::{
        builder::{KillingProxy, Wallet},
        chain::Net,
        common::SEED_RULE,
        process::ServerProcess,
    };

    fn place_session(net: &Net, accounts: &[Pubkey], namespace: &str) -> Pubkey {
        let key = Pubkey::new_unique();
        let data = Record::Session(codec::SessionRecord {
            id: key.to_bytes(),
            owner: [7; 32],
            accounts: accounts.iter().map(|a| a.to_bytes()).collect(),
            namespace: namespace.into(),
            is_consumed: false,
            nonce: 1,
            created_at: 1_700_000_000,
            metadata: vec![],
        })
        .encode();
        net.place(&key, &data);
        key
    }

    fn chain_record(net: &Net, key: &Pubkey) -> Option<Record> {
        tokio::task::block_in_place(|| net.surfnet.rpc_client().get_account(key).ok())
            .and_then(|a| Record::decode(&a.data).ok())
    }

    fn chain_session(net: &Net, key: &Pubkey) -> Option<codec::SessionRecord> {
        match chain_record(net, key) {
            Some(Record::Session(s)) => Some(s),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_seed_rule_consumes_an_idle_session_on_chain_and_the_monitor_sees_it() {
        let net = Net::start().await;
        let wallet = Wallet::funded(&net);
        let test_db = TestDb::new(Db::Sqlite).await.unwrap();
        let mut config = fast(net.config(&test_db));
        config.service.keypair_path = wallet.path.display().to_string();
        config.lifecycle.auto_progress = true;
        let members = [Pubkey::new_unique(), Pubkey::new_unique()];
        let original = place_session(&net, &members, "orig");
        let server = TestServer::start_with(test_db, config).await;
        let mut lifecycle = server.lifecycle().await;
        eventually(Duration::from_secs(20), "the session is stored", || {
            let mut c = lifecycle.clone();
            async move {
                c.get_session(GetSessionRequest {
                    id: original.to_string(),
                })
                .await
                .is_ok()
            }
        })
        .await;

        // Seed 000's example rule through POST /rules, idle time shortened.
        let body = SEED_RULE.replace("300", "2");
        let created = reqwest::Client::new()
            .post(format!("{}/rules", server.http()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{:?}", created.text().await);

        let addresses = ConsumeAddresses::derive(
            "rule-1",
            &original.to_string(),
            1,
            1,
            &wallet.keypair.pubkey(),
            &net.program,
        );
        let successor = addresses.successors[0].1;
        eventually(Duration::from_secs(30), "consumed on chain", || async {
            chain_session(&net, &original).is_some_and(|s| s.is_consumed)
        })
        .await;
        let new = chain_session(&net, &successor).expect("the new session is on chain");
        assert_eq!(new.namespace, "recycled");
        assert_eq!(
            new.accounts,
            vec![members[0].to_bytes(), members[1].to_bytes()]
        );
        assert_eq!(new.nonce, 2);
        match chain_record(&net, &addresses.consumption.1) {
            Some(Record::SessionConsumption(c)) => {
                assert_eq!(c.consumed_session, original.to_bytes());
                assert_eq!(c.created_sessions, vec![successor.to_bytes()]);
            }
            other => panic!("no consumption record: {other:?}"),
        }
        eventually(Duration::from_secs(20), "the monitor saw it", || {
            let mut c = lifecycle.clone();
            async move {
                let consumed = c
                    .get_session(GetSessionRequest {
                        id: original.to_string(),
                    })
                    .await
                    .map(|r| r.into_inner().session.is_some_and(|s| s.is_consumed))
                    .unwrap_or(false);
                let created = c
                    .get_session(GetSessionRequest {
                        id: successor.to_string(),
                    })
                    .await
                    .is_ok();
                consumed && created
            }
        })
        .await;
        let stored = lifecycle
            .get_session(GetSessionRequest {
                id: original.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            stored.session.unwrap().created_sessions,
            vec![successor.to_string()]
        );
        // The orchestrator records the outcome once the transaction is
        // confirmed, which can trail the monitor seeing its effect.
        eventually(Duration::from_secs(10), "the action's outcome", || async {
            let executed = outcomes(&server, EventType::ActionExecuted).await;
            executed
                .iter()
                .any(|(r, s, ..)| r == "rule-1" && *s == original.to_string())
        })
        .await;
        let executed = outcomes(&server, EventType::ActionExecuted).await;
        let ours: Vec<_> = executed
            .iter()
            .filter(|(r, s, ..)| r == "rule-1" && *s == original.to_string())
            .collect();
        assert_eq!(ours.len(), 1, "{executed:?}");
        assert_eq!(ours[0].4, 1, "one attempt");
        assert!(!ours[0].2.is_empty(), "the signature is the detail");
        assert!(metric(&server, "valence_session_lifetime_seconds_count").await >= 1.0);
        assert!(
            metric(
                &server,
                "valence_rule_actions_total{kind=\"consume_and_create\",outcome=\"executed\"}"
            )
            .await
                >= 1.0
        );
        assert!(server.stop().await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crash_in_the_middle_of_an_action_does_not_repeat_it() {
        let net = Net::start().await;
        let wallet = Wallet::funded(&net);
        let proxy = KillingProxy::start(net.surfnet.rpc_url().to_string()).await;
        let db = TestDb::new(Db::Sqlite).await.unwrap();
        let members = [Pubkey::new_unique(), Pubkey::new_unique()];
        let original = place_session(&net, &members, "orig");
        let program = net.program.to_string();
        let wallet_path = wallet.path.display().to_string();
        let env = [
            ("RPC_URL", proxy.url.as_str()),
            ("WS_URL", net.surfnet.ws_url()),
            ("SHARD_PROGRAM_ID", program.as_str()),
            ("WALLET_PATH", wallet_path.as_str()),
            ("POLL_INTERVAL", "1"),
            ("AUTO_PROGRESS", "true"),
        ];
        let mut first = ServerProcess::start(&db.url, &env).await;
        *proxy.victim.lock().unwrap() = first.child.id();
        let mut rules = RuleServiceClient::connect(format!("http://{}", first.grpc))
            .await
            .unwrap();
        rules
            .create_rule(CreateRuleRequest {
                rule: Some(seed_rule(
                    "crash",
                    r#"{"CustomPredicate":"session.namespace == 'orig' && idle_seconds >= 1"}"#,
                    r#"{"ConsumeAndCreate":[{"account_indices":[1],"namespace":"next","metadata":[5]}]}"#,
                )),
            })
            .await
            .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(60), first.child.wait())
            .await
            .expect("the server was killed after sending")
            .unwrap();
        assert!(!exit.success());
        eventually(
            Duration::from_secs(30),
            "the sent transaction landed",
            || async { chain_session(&net, &original).is_some_and(|s| s.is_consumed) },
        )
        .await;
        assert_eq!(proxy.sends.load(Ordering::SeqCst), 1);

        let second = ServerProcess::start(&db.url, &env).await;
        let lifecycle = LifecycleServiceClient::connect(format!("http://{}", second.grpc))
            .await
            .unwrap();
        let events = |kind: EventType| {
            let mut c = lifecycle.clone();
            async move {
                c.list_events(ListEventsRequest {
                    limit: 1000,
                    event_type: kind as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .events
            }
        };
        eventually(
            Duration::from_secs(30),
            "the resumed action finished",
            || async { !events(EventType::ActionExecuted).await.is_empty() },
        )
        .await;
        // Observation window: nothing is sent again meanwhile.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(proxy.sends.load(Ordering::SeqCst), 1, "nothing sent again");
        let executed = events(EventType::ActionExecuted).await;
        assert_eq!(executed.len(), 1);
        let Some(Payload::ActionExecuted(outcome)) = &executed[0].payload else {
            panic!("not an outcome");
        };
        assert_eq!(outcome.rule_id, "crash");
        assert_eq!(outcome.session_id, original.to_string());
        assert_eq!(outcome.attempt, 1);
        assert_eq!(outcome.detail, proxy.signatures.lock().unwrap()[0]);
        assert!(events(EventType::ActionFailed).await.is_empty());
        let matches = events(EventType::RuleMatched).await;
        assert_eq!(matches.len(), 1, "matched once across the crash");
        let addresses = ConsumeAddresses::derive(
            "crash",
            &original.to_string(),
            1,
            1,
            &wallet.keypair.pubkey(),
            &net.program,
        );
        let new = chain_session(&net, &addresses.successors[0].1).expect("the new session");
        assert_eq!(new.accounts, vec![members[1].to_bytes()]);
        assert_eq!(new.metadata, vec![5]);
        eventually(Duration::from_secs(20), "the store has both", || {
            let mut c = lifecycle.clone();
            let successor = addresses.successors[0].1.to_string();
            async move {
                let consumed = c
                    .get_session(GetSessionRequest {
                        id: original.to_string(),
                    })
                    .await
                    .map(|r| r.into_inner().session.is_some_and(|s| s.is_consumed))
                    .unwrap_or(false);
                consumed
                    && c.get_session(GetSessionRequest { id: successor })
                        .await
                        .is_ok()
            }
        })
        .await;
        assert_eq!(second.terminate().await, Some(0));
    }
}
