//! The gRPC API on a real server: health, rules, queries, validation and
//! access control, on SQLite and PostgreSQL.

use tonic::Code;
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{
        lifecycle_service_client::LifecycleServiceClient, rule_condition, CreateRuleRequest,
        DeleteRuleRequest, GetAccountRequest, GetRuleRequest, GetStatsRequest, ListAccountsRequest,
        ListEventsRequest, ListRulesRequest, ProgressionRule, SetRuleEnabledRequest,
        UpdateRuleRequest,
    },
};
use valence_lifecycle_server::store::{AccountRecord, Store};

use crate::common::{
    authed, backend_tests, cel_bombs, pubkey, test_config, with_tokens, Db, TestDb, TestServer,
    ADMIN, OPERATOR, READER, SEED_RULE,
};

fn seed_rule() -> ProgressionRule {
    serde_json::from_str::<SeedRule>(SEED_RULE).unwrap().into()
}

#[tokio::test]
async fn health_is_serving_overall_and_per_service() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in [
        "",
        "valence.lifecycle.v1.LifecycleService",
        "valence.lifecycle.v1.EventStreamService",
    ] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    assert!(server.stop().await, "clean shutdown");
}

backend_tests!(
    async fn rule_crud_round_trip_with_events(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let mut rules = server.rules().await;
        let created = rules
            .create_rule(CreateRuleRequest {
                rule: Some(seed_rule()),
            })
            .await
            .unwrap()
            .into_inner()
            .rule
            .unwrap();
        assert!(created.created_at.is_some());
        let dup = rules
            .create_rule(CreateRuleRequest {
                rule: Some(seed_rule()),
            })
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists, "{db:?}");

        let mut changed = seed_rule();
        changed.name = "renamed".into();
        changed.condition = Some(valence_lifecycle_api::v1::RuleCondition {
            kind: Some(rule_condition::Kind::AllAccountsHaveCapability(
                "mint".into(),
            )),
        });
        rules
            .update_rule(UpdateRuleRequest {
                rule: Some(changed),
            })
            .await
            .unwrap();
        rules
            .set_rule_enabled(SetRuleEnabledRequest {
                id: "rule-1".into(),
                enabled: false,
            })
            .await
            .unwrap();
        let got = rules
            .get_rule(GetRuleRequest {
                id: "rule-1".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .rule
            .unwrap();
        assert_eq!(got.name, "renamed");
        assert!(!got.enabled);
        let enabled = rules
            .list_rules(ListRulesRequest {
                enabled_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            enabled.rules.is_empty(),
            "{db:?}: the only rule is disabled"
        );
        rules
            .delete_rule(DeleteRuleRequest {
                id: "rule-1".into(),
            })
            .await
            .unwrap();
        let gone = rules
            .get_rule(GetRuleRequest {
                id: "rule-1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);

        let mut lifecycle = server.lifecycle().await;
        let events = lifecycle
            .list_events(ListEventsRequest {
                entity_id: "rule-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let types: Vec<String> = events
            .iter()
            .rev()
            .map(|e| {
                valence_lifecycle_api::json::short_name::<valence_lifecycle_api::v1::EventType>(
                    e.event_type,
                )
            })
            .collect();
        assert_eq!(
            types,
            [
                "rule_created",
                "rule_updated",
                "rule_disabled",
                "rule_deleted"
            ],
            "{db:?}"
        );
        assert!(server.stop().await);
    }
);

#[tokio::test]
async fn malformed_input_is_invalid_argument_naming_the_field_and_changes_nothing() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let mut rules = server.rules().await;
    let mut lifecycle = server.lifecycle().await;
    let head_before = lifecycle
        .list_events(ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .head_sequence;

    let err = lifecycle
        .get_account(GetAccountRequest {
            id: "not-a-pubkey!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("id"), "{}", err.message());
    // google.rpc details (AIP-193): the field violation and a stable reason.
    use tonic_types::StatusExt as _;
    let bad = err.get_details_bad_request().expect("a BadRequest detail");
    assert_eq!(bad.field_violations.len(), 1);
    assert_eq!(bad.field_violations[0].field, "id");
    assert!(!bad.field_violations[0].description.is_empty());
    let info = err.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INVALID_FIELD", "lifecycle.valence")
    );

    let err = lifecycle
        .list_accounts(ListAccountsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_size"), "{}", err.message());

    let mut no_condition = seed_rule();
    no_condition.condition = None;
    let err = rules
        .create_rule(CreateRuleRequest {
            rule: Some(no_condition),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("rule.condition"),
        "{}",
        err.message()
    );

    let mut zero_idle = seed_rule();
    zero_idle.condition = Some(valence_lifecycle_api::v1::RuleCondition {
        kind: Some(rule_condition::Kind::SessionIdleForSeconds(0)),
    });
    let err = rules
        .create_rule(CreateRuleRequest {
            rule: Some(zero_idle),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("session_idle_for_seconds"),
        "{}",
        err.message()
    );

    // An oversized message is refused before it reaches a handler, with
    // gRPC's code for it and a message naming the limit and its setting.
    let mut huge = seed_rule();
    huge.name = "x".repeat(5 * 1024 * 1024);
    let request = CreateRuleRequest { rule: Some(huge) };
    let size = prost::Message::encoded_len(&request);
    let err = rules.create_rule(request).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        format!("request message is {size} bytes; the limit is 4194304 bytes (server.max_message_bytes)")
    );

    let err = lifecycle
        .get_account(GetAccountRequest { id: pubkey(9) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let stats = lifecycle
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.rules, 0, "nothing stored");
    // Components may still be recording their start; nothing else may appear.
    let events = lifecycle
        .list_events(ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let appended: Vec<&str> = events
        .iter()
        .filter(|e| {
            e.sequence > head_before && !e.entity_id.chars().all(|c| c.is_ascii_lowercase())
        })
        .map(|e| e.entity_id.as_str())
        .collect();
    assert!(
        appended.is_empty(),
        "refused calls appended events about {appended:?}"
    );
    assert!(server.stop().await);
}

#[tokio::test]
async fn queries_return_what_the_store_holds_with_paging() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = test_config(&db.url);
    let store = Store::connect(&config.database).await.unwrap();
    for n in 1..=3u8 {
        let account = AccountRecord {
            id: pubkey(n),
            owner: pubkey(100),
            capabilities: vec!["transfer".into()],
            state_hash: "cd".repeat(32),
            is_active: true,
            created_at_ms: 1_700_000_000_000 + n as i64,
            request_id: String::new(),
            slot: None,
            signature: String::new(),
        };
        store.upsert_account(&account).await.unwrap();
    }
    let server = TestServer::start_with(db, config).await;
    let mut lifecycle = server.lifecycle().await;
    let first = lifecycle
        .list_accounts(ListAccountsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.accounts.len(), 2);
    assert_eq!(first.accounts[0].id, pubkey(3), "newest first");
    let second = lifecycle
        .list_accounts(ListAccountsRequest {
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.accounts.len(), 1);
    assert!(second.next_page_token.is_empty());
    let stats = lifecycle
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.accounts, 3);
    assert_eq!(stats.store_backend, "sqlite");
    assert!(stats.is_running);
    assert!(stats.components.iter().any(|c| c.name == "grpc"));
    assert!(server.stop().await);
}

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = with_tokens(test_config(&db.url));
    let server = TestServer::start_with(db, config).await;
    let channel = server.channel().await;
    let mut lifecycle = LifecycleServiceClient::new(channel.clone());
    let mut rules =
        valence_lifecycle_api::v1::rule_service_client::RuleServiceClient::new(channel.clone());
    let mut singletons =
        valence_lifecycle_api::v1::singleton_admin_service_client::SingletonAdminServiceClient::new(
            channel.clone(),
        );

    let err = lifecycle.get_stats(GetStatsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = lifecycle
        .get_stats(authed(GetStatsRequest {}, "wrong-token-wrong-token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    lifecycle
        .get_stats(authed(GetStatsRequest {}, READER))
        .await
        .unwrap();

    let err = rules
        .create_rule(authed(
            CreateRuleRequest {
                rule: Some(seed_rule()),
            },
            READER,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("operator"), "{}", err.message());
    rules
        .create_rule(authed(
            CreateRuleRequest {
                rule: Some(seed_rule()),
            },
            OPERATOR,
        ))
        .await
        .unwrap();

    let request = valence_lifecycle_api::v1::GetSingletonsRequest {};
    let err = singletons
        .get_singletons(authed(request, OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Admin passes access control; with no chain the stored state is shown.
    let shown = singletons
        .get_singletons(authed(request, ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.singletons.len(), 3);

    // Health stays open for load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert!(server.stop().await);
}

backend_tests!(
    // No number or string reaches the database unchecked: out-of-range
    // tokens and sequences and NUL characters are InvalidArgument naming
    // the field (they were INTERNAL on PostgreSQL, or silently the first
    // page on SQLite), and the server keeps serving.
    async fn out_of_range_numbers_and_nul_strings_are_refused_naming_the_field(db: Db) {
        use valence_lifecycle_api::v1::{ListAccountRequestsRequest, ListSessionsRequest};
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let mut client = LifecycleServiceClient::new(server.channel().await);
        for token in ["9223372036854775808", "18446744073709551615", "0", "abc"] {
            let err = client
                .list_account_requests(ListAccountRequestsRequest {
                    page_token: token.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{db:?} {token}: {err:?}");
            assert!(err.message().contains("page_token"), "{}", err.message());
        }
        let err = client
            .list_events(ListEventsRequest {
                after_sequence: Some(1 << 63),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{db:?}: {err:?}");
        assert!(
            err.message().contains("after_sequence"),
            "{}",
            err.message()
        );
        let err = client
            .list_events(ListEventsRequest {
                entity_id: "a\0b".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{db:?}: {err:?}");
        assert!(err.message().contains("entity_id"), "{}", err.message());
        let err = client
            .list_sessions(ListSessionsRequest {
                namespace: "ns\0".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{db:?}: {err:?}");
        assert!(err.message().contains("namespace"), "{}", err.message());
        // Still serving.
        let page = client
            .list_accounts(ListAccountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.is_empty());
    }
);

backend_tests!(
    // A CEL condition that would overflow a stack is refused on every
    // gRPC method that compiles one, the reader's dry run included, with
    // the field and the limit named; the server keeps serving and the
    // stored rule is unchanged.
    async fn cel_bombs_are_refused_naming_the_limit_and_the_server_survives(db: Db) {
        use valence_lifecycle_api::v1::{evaluate_rule_request::Target, EvaluateRuleRequest};
        let Some(test_db) = TestDb::new(db).await else {
            return;
        };
        let config = with_tokens(test_config(&test_db.url));
        let server = TestServer::start_with(test_db, config).await;
        let mut rules = server.rules().await;
        let stored = rules
            .create_rule(authed(
                CreateRuleRequest {
                    rule: Some(seed_rule()),
                },
                OPERATOR,
            ))
            .await
            .unwrap()
            .into_inner()
            .rule
            .unwrap();
        for (expr, limit) in cel_bombs() {
            let mut rule = seed_rule();
            rule.condition = Some(valence_lifecycle_api::v1::RuleCondition {
                kind: Some(rule_condition::Kind::CustomPredicate(expr.clone())),
            });
            let evaluate = rules
                .evaluate_rule(authed(
                    EvaluateRuleRequest {
                        target: Some(Target::Rule(rule.clone())),
                        limit: 0,
                    },
                    READER,
                ))
                .await
                .map(|_| ());
            let create = rules
                .create_rule(authed(
                    CreateRuleRequest {
                        rule: Some(ProgressionRule {
                            id: "rule-2".into(),
                            ..rule.clone()
                        }),
                    },
                    OPERATOR,
                ))
                .await
                .map(|_| ());
            let update = rules
                .update_rule(authed(UpdateRuleRequest { rule: Some(rule) }, OPERATOR))
                .await
                .map(|_| ());
            for (method, result) in [
                ("EvaluateRule", evaluate),
                ("CreateRule", create),
                ("UpdateRule", update),
            ] {
                let err = result.unwrap_err();
                let what = format!("{db:?} {method} {} bytes", expr.len());
                assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
                assert!(
                    err.message().contains("rule.condition.custom_predicate")
                        && err.message().contains(limit),
                    "{what}: {:?} should name the field and {limit:?}",
                    err.message()
                );
            }
        }
        // Still serving, and nothing changed.
        let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        let listed = rules
            .list_rules(authed(ListRulesRequest::default(), READER))
            .await
            .unwrap()
            .into_inner()
            .rules;
        assert_eq!(listed, vec![stored], "{db:?}");
        assert!(server.stop().await);
    }
);

/// The shard filters take a configured shard's program id or name; anything
/// else (unknown, huge, NUL, another program) is InvalidArgument naming
/// `shard`, over gRPC and REST alike, and the server keeps serving.
#[tokio::test]
async fn shard_filters_take_a_configured_shard_and_refuse_anything_else() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    // Shards are configuration: no chain is needed to filter by them.
    config.lifecycle.shard_program_ids =
        "alpha=11111111111111111111111111111112,beta=Stake11111111111111111111111111111111111111"
            .into();
    let server = TestServer::start_with(db, config).await;
    let mut lifecycle = server.lifecycle().await;
    for good in ["alpha", "Stake11111111111111111111111111111111111111", ""] {
        let listed = lifecycle
            .list_events(ListEventsRequest {
                shard: good.into(),
                ..Default::default()
            })
            .await;
        assert!(listed.is_ok(), "{good:?}: {listed:?}");
    }
    let huge = "x".repeat(100_000);
    for bad in [
        "gamma",
        "alpha\0",
        huge.as_str(),
        "11111111111111111111111111111111",
    ] {
        let err = lifecycle
            .list_accounts(ListAccountsRequest {
                shard: bad.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{:.80}", bad);
        use tonic_types::StatusExt as _;
        let violation = &err.get_details_bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "shard");
        assert!(err.message().contains("alpha, beta"), "{}", err.message());
        assert!(err.message().len() < 400, "the value is not echoed whole");
    }
    let rest = reqwest::get(format!("{}/sessions?shard=gamma", server.http()))
        .await
        .unwrap();
    assert_eq!(rest.status(), 400);
    let body: serde_json::Value = rest.json().await.unwrap();
    assert!(body.to_string().contains("shard"), "{body}");
    let stats = lifecycle
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = stats.shards.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(stats.shards.iter().all(|s| s.owner_replica_id.is_empty()));
    assert!(server.stop().await);
}
