//! Singleton administration against a real Surfnet: the stand-in deployed
//! under three more program ids plays processor, scheduler and diff; every
//! operation is a real transaction whose effect is read back from chain.

use std::time::Duration;

use solana_sdk::{
    pubkey::Pubkey,
    signature::{Keypair, Signer},
};
use surfpool_sdk::cheatcodes::builders::DeployProgram;
use tonic::{transport::Channel, Code};
use valence_lifecycle_api::v1::{
    lifecycle_event::Payload, singleton_admin_service_client::SingletonAdminServiceClient,
    singleton_info, update_singleton_config_request::Update, DiffConfig, EventType,
    GetSingletonsRequest, InitializeSingletonsRequest, ListEventsRequest, OptimizationLevel,
    PauseSingletonRequest, ProcessorConfig, ResumeSingletonRequest, SchedulerConfig,
    SchedulerConfigUpdate, SingletonInfo, SingletonKind, SingletonStatus,
    UpdateSingletonConfigRequest,
};
use valence_lifecycle_server::{
    chain::codec::{Record, SingletonStateRecord},
    config::Config,
    singletons::{instructions::state_address, Kind, SingletonConfig},
};

use crate::{
    chain::Net,
    cli::{lifecyclectl, run},
    common::{
        authed, backend_tests, eventually, metric, with_tokens, Db, TestDb, TestServer, ADMIN,
        READER,
    },
};

const KINDS: [Kind; 3] = [Kind::Processor, Kind::Scheduler, Kind::Diff];

/// A Surfnet with the stand-in at the shard id and at three singleton ids,
/// and a funded service wallet (the singleton authority) in a keypair file.
struct SingletonNet {
    net: Net,
    programs: [Pubkey; 3],
    wallet: Keypair,
    /// A separate singleton authority, when the test configures one.
    authority: Option<Keypair>,
    dir: tempfile::TempDir,
}

impl SingletonNet {
    async fn start() -> SingletonNet {
        Self::start_with(10_000_000_000, None).await
    }

    /// With `lamports` in the service wallet and, optionally, a separate authority.
    async fn start_with(lamports: u64, authority: Option<Keypair>) -> SingletonNet {
        let net = Net::start().await;
        let programs = [
            Pubkey::new_unique(),
            Pubkey::new_unique(),
            Pubkey::new_unique(),
        ];
        let wallet = Keypair::new();
        tokio::task::block_in_place(|| {
            for program in programs {
                net.surfnet
                    .cheatcodes()
                    .deploy(
                        DeployProgram::new(program).so_bytes(
                            include_bytes!("../../shard-program/shard_program.so").to_vec(),
                        ),
                    )
                    .unwrap();
            }
            net.surfnet
                .cheatcodes()
                .fund_sol(&wallet.pubkey(), lamports)
                .unwrap();
        });
        SingletonNet {
            net,
            programs,
            wallet,
            authority,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self, db: &TestDb) -> Config {
        let mut c = self.net.config(db);
        let path = self.dir.path().join("wallet.json");
        std::fs::write(
            &path,
            serde_json::to_string(&self.wallet.to_bytes().to_vec()).unwrap(),
        )
        .unwrap();
        c.service.keypair_path = path.display().to_string();
        c.singletons.processor_program_id = self.programs[0].to_string();
        c.singletons.scheduler_program_id = self.programs[1].to_string();
        c.singletons.diff_program_id = self.programs[2].to_string();
        if let Some(authority) = &self.authority {
            let path = self.dir.path().join("authority.json");
            std::fs::write(
                &path,
                serde_json::to_string(&authority.to_bytes().to_vec()).unwrap(),
            )
            .unwrap();
            c.singletons.authority_keypair_path = path.display().to_string();
        }
        c
    }

    fn authority(&self) -> Pubkey {
        self.authority.as_ref().unwrap_or(&self.wallet).pubkey()
    }

    /// The decoded SingletonState of `kind`, or None when its account does not exist.
    fn state(&self, kind: Kind) -> Option<SingletonStateRecord> {
        let program = self.programs[kind.code() as usize - 1];
        let key = state_address(kind, &self.authority(), &program);
        let account = tokio::task::block_in_place(|| {
            self.net
                .surfnet
                .rpc_client()
                .get_account_with_commitment(&key, Default::default())
                .unwrap()
                .value
        })?;
        assert_eq!(
            account.owner, program,
            "{kind} state is owned by its program"
        );
        match Record::decode(&account.data).unwrap() {
            Record::SingletonState(s) => Some(s),
            other => panic!("{kind} state account holds {other:?}"),
        }
    }

    fn chain_statuses(&self) -> Vec<u8> {
        KINDS
            .iter()
            .map(|k| self.state(*k).map_or(0, |s| s.status))
            .collect()
    }
}

fn processor() -> ProcessorConfig {
    ProcessorConfig {
        max_verification_functions: 10,
        max_compute_units: 1_000_000,
        pause_authority: String::new(),
    }
}

fn scheduler() -> SchedulerConfig {
    SchedulerConfig {
        max_shards: 100,
        max_queue_size: 1000,
        default_priority: 5,
    }
}

fn diff() -> DiffConfig {
    DiffConfig {
        max_batch_size: 50,
        optimization_level: OptimizationLevel::Aggressive as i32,
    }
}

async fn admin(server: &TestServer) -> SingletonAdminServiceClient<Channel> {
    SingletonAdminServiceClient::new(server.channel().await)
}

/// The singleton operations logged after `after`, as "kind operation".
async fn operations_after(server: &TestServer, after: u64) -> Vec<String> {
    let events = server
        .lifecycle()
        .await
        .list_events(authed(
            ListEventsRequest {
                event_type: EventType::SingletonOperation as i32,
                after_sequence: Some(after),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    events
        .into_iter()
        .map(|e| match e.payload {
            Some(Payload::SingletonOperation(op)) => {
                assert!(op.error.is_empty(), "{op:?}");
                assert!(!e.signature.is_empty(), "operations carry their signature");
                assert_eq!(e.entity_id, op.singleton);
                format!("{} {}", op.singleton, op.operation)
            }
            other => panic!("unexpected payload {other:?}"),
        })
        .collect()
}

async fn head(server: &TestServer) -> u64 {
    server
        .lifecycle()
        .await
        .list_events(authed(ListEventsRequest::default(), ADMIN))
        .await
        .unwrap()
        .into_inner()
        .head_sequence
}

async fn get(server: &TestServer) -> Vec<SingletonInfo> {
    admin(server)
        .await
        .get_singletons(authed(GetSingletonsRequest {}, ADMIN))
        .await
        .unwrap()
        .into_inner()
        .singletons
}

fn statuses(infos: &[SingletonInfo]) -> Vec<SingletonStatus> {
    infos
        .iter()
        .map(|i| SingletonStatus::try_from(i.status).unwrap())
        .collect()
}

async fn order_pause_resume_and_updates(db: Db) {
    let Some(test_db) = TestDb::new(db).await else {
        return;
    };
    let net = SingletonNet::start().await;
    let config = with_tokens(net.config(&test_db));
    let server = TestServer::start_with(test_db, config).await;
    // Every component started (they append events while starting, which
    // would move the head the invalid requests must leave alone).
    server.wait_healthy(Duration::from_secs(20)).await;
    let mut client = admin(&server).await;

    // A reader may not administer singletons, not even look.
    let err = client
        .get_singletons(authed(GetSingletonsRequest {}, READER))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = client
        .pause_singleton(authed(
            PauseSingletonRequest {
                all: true,
                ..Default::default()
            },
            READER,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Scheduler before processor: refused naming the processor, nothing sent.
    let err = client
        .initialize_singletons(authed(
            InitializeSingletonsRequest {
                scheduler: Some(scheduler()),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("processor"), "{}", err.message());
    assert_eq!(net.chain_statuses(), vec![0, 0, 0]);

    // Invalid configs: InvalidArgument naming the field; nothing stored or sent.
    let start = head(&server).await;
    let invalid = [
        (
            InitializeSingletonsRequest {
                processor: Some(processor()),
                scheduler: Some(SchedulerConfig {
                    max_queue_size: 0,
                    ..scheduler()
                }),
                ..Default::default()
            },
            "scheduler.max_queue_size",
        ),
        (
            InitializeSingletonsRequest {
                processor: Some(processor()),
                scheduler: Some(SchedulerConfig {
                    default_priority: 11,
                    ..scheduler()
                }),
                ..Default::default()
            },
            "scheduler.default_priority",
        ),
        (
            InitializeSingletonsRequest {
                processor: Some(processor()),
                scheduler: Some(scheduler()),
                diff: Some(DiffConfig {
                    max_batch_size: 0,
                    ..diff()
                }),
            },
            "diff.max_batch_size",
        ),
        (
            InitializeSingletonsRequest {
                processor: Some(processor()),
                scheduler: Some(scheduler()),
                diff: Some(DiffConfig {
                    optimization_level: 7,
                    ..diff()
                }),
            },
            "diff.optimization_level",
        ),
    ];
    for (request, field) in invalid {
        let err = client
            .initialize_singletons(authed(request, ADMIN))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let err = client
        .pause_singleton(authed(
            PauseSingletonRequest {
                singleton: 9,
                all: false,
            },
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("singleton"), "{}", err.message());
    // Singleton operations only: a loaded machine may log component
    // status changes at any time.
    assert!(
        operations_after(&server, start).await.is_empty(),
        "invalid requests append nothing"
    );
    assert_eq!(net.chain_statuses(), vec![0, 0, 0], "and send nothing");
    assert!(statuses(&get(&server).await)
        .iter()
        .all(|s| *s == SingletonStatus::Uninitialized));

    // Initialize all three: processor, scheduler, diff, each a transaction.
    let initialized = client
        .initialize_singletons(authed(
            InitializeSingletonsRequest {
                processor: Some(processor()),
                scheduler: Some(scheduler()),
                diff: Some(diff()),
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner()
        .singletons;
    assert_eq!(statuses(&initialized), vec![SingletonStatus::Active; 3]);
    assert_eq!(
        operations_after(&server, start).await,
        [
            "processor initialize",
            "scheduler initialize",
            "diff initialize"
        ]
    );
    assert_eq!(net.chain_statuses(), vec![1, 1, 1]);
    let on_chain = net.state(Kind::Diff).unwrap();
    assert_eq!(on_chain.version, 1);
    assert_eq!(on_chain.authority, net.wallet.pubkey().to_bytes());
    assert_eq!(
        SingletonConfig::decode(Kind::Diff, &on_chain.config).unwrap(),
        SingletonConfig::diff(&diff()).unwrap()
    );
    let processor_info = &initialized[0];
    assert_eq!(processor_info.program_id, net.programs[0].to_string());
    assert_eq!(processor_info.history.len(), 1);
    assert!(!processor_info.history[0].signature.is_empty());
    let Some(singleton_info::Config::Processor(p)) = &processor_info.config else {
        panic!("processor config missing: {processor_info:?}");
    };
    assert_eq!(
        p.pause_authority,
        net.wallet.pubkey().to_string(),
        "pause authority defaults to the authority"
    );

    // Again with the same config: a no-op; with another: refused.
    let before = head(&server).await;
    client
        .initialize_singletons(authed(
            InitializeSingletonsRequest {
                processor: Some(processor()),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap();
    assert!(
        operations_after(&server, before).await.is_empty(),
        "re-initializing sends nothing"
    );
    let err = client
        .initialize_singletons(authed(
            InitializeSingletonsRequest {
                processor: Some(ProcessorConfig {
                    max_compute_units: 5,
                    ..processor()
                }),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("UpdateSingletonConfig"),
        "{}",
        err.message()
    );

    // Pause all: processor, scheduler, diff, in the log and on chain.
    let before = head(&server).await;
    let paused = client
        .pause_singleton(authed(
            PauseSingletonRequest {
                all: true,
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        statuses(&paused.singletons),
        vec![SingletonStatus::Paused; 3]
    );
    assert_eq!(
        operations_after(&server, before).await,
        ["processor pause", "scheduler pause", "diff pause"]
    );
    assert_eq!(net.chain_statuses(), vec![2, 2, 2]);

    // Pausing again: a no-op that says so (the program would refuse with AlreadyPaused).
    let before = head(&server).await;
    let again = client
        .pause_singleton(authed(
            PauseSingletonRequest {
                singleton: SingletonKind::Scheduler as i32,
                all: false,
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.message.contains("scheduler was already paused"),
        "{}",
        again.message
    );
    assert!(operations_after(&server, before).await.is_empty());

    // Resume all: diff, scheduler, processor.
    let resumed = client
        .resume_singleton(authed(
            ResumeSingletonRequest {
                all: true,
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resumed
            .singletons
            .iter()
            .map(|i| i.kind)
            .collect::<Vec<_>>(),
        [
            SingletonKind::Diff as i32,
            SingletonKind::Scheduler as i32,
            SingletonKind::Processor as i32
        ]
    );
    assert_eq!(
        operations_after(&server, before).await,
        ["diff resume", "scheduler resume", "processor resume"]
    );
    assert_eq!(net.chain_statuses(), vec![1, 1, 1]);

    // A partial update changes only the field given and bumps the version.
    let updated = client
        .update_singleton_config(authed(
            UpdateSingletonConfigRequest {
                update: Some(Update::Scheduler(SchedulerConfigUpdate {
                    max_queue_size: Some(2000),
                    ..Default::default()
                })),
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner()
        .singleton
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(
        updated.config,
        Some(singleton_info::Config::Scheduler(SchedulerConfig {
            max_queue_size: 2000,
            ..scheduler()
        }))
    );
    assert_eq!(
        updated
            .history
            .iter()
            .map(|h| h.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(updated.history[0]
        .config_json
        .contains("\"max_queue_size\":1000"));
    assert!(updated.history[1]
        .config_json
        .contains("\"max_queue_size\":2000"));
    assert!(updated.history[1]
        .config_json
        .contains("\"max_shards\":100"));
    let on_chain = net.state(Kind::Scheduler).unwrap();
    assert_eq!(on_chain.version, 2);
    assert_eq!(
        SingletonConfig::decode(Kind::Scheduler, &on_chain.config).unwrap(),
        SingletonConfig::scheduler(&SchedulerConfig {
            max_queue_size: 2000,
            ..scheduler()
        })
        .unwrap()
    );
    let err = client
        .update_singleton_config(authed(
            UpdateSingletonConfigRequest {
                update: Some(Update::Scheduler(SchedulerConfigUpdate {
                    default_priority: Some(99),
                    ..Default::default()
                })),
            },
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("scheduler.default_priority"));
    assert_eq!(net.state(Kind::Scheduler).unwrap().version, 2);

    // GetSingletons: versions, health; /health and /metrics show them too.
    let infos = get(&server).await;
    assert_eq!(
        infos.iter().map(|i| i.version).collect::<Vec<_>>(),
        [1, 2, 1]
    );
    let scheduler_health = infos[1].health.clone().unwrap();
    assert_eq!(scheduler_health.operations_total, 4);
    assert_eq!(scheduler_health.success_rate, 1.0);
    assert!(scheduler_health.last_operation_at.is_some());
    let health: serde_json::Value = reqwest::get(format!("{}/health", server.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["singletons"][1]["name"], "scheduler", "{health}");
    assert_eq!(health["singletons"][1]["status"], "active", "{health}");
    assert_eq!(health["singletons"][1]["version"], 2, "{health}");
    eventually(Duration::from_secs(5), "singleton metrics", || async {
        metric(
            &server,
            "valence_singleton_operations_total{kind=\"diff\",operation=\"pause\",outcome=\"success\"}",
        )
        .await
            == 1.0
    })
    .await;
    assert_eq!(
        metric(&server, "valence_singleton_status{kind=\"processor\"}").await,
        SingletonStatus::Active as i32 as f64
    );
    assert!(server.stop().await);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn order_pause_resume_and_partial_updates_on_chain(db: Db) {
        order_pause_resume_and_updates(db).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecyclectl_singletons_init_pause_update_and_status() {
    let net = SingletonNet::start().await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = net.config(&db);
    let server = TestServer::start_with(db, config).await;
    let endpoint = format!("http://{}", server.grpc);
    let env = [("VALENCE_ENDPOINT", endpoint.as_str())];
    let ctl = lifecyclectl();

    let (code, _, stderr) = run(
        &ctl,
        &["singletons", "init", "--scheduler-max-queue-size", "10"],
        &env,
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("processor"), "{stderr}");

    let (code, stdout, stderr) = run(
        &ctl,
        &[
            "singletons",
            "init",
            "--processor-max-verification-functions",
            "10",
            "--processor-max-compute-units",
            "1000000",
            "--scheduler-max-shards",
            "100",
            "--scheduler-max-queue-size",
            "1000",
            "--scheduler-default-priority",
            "5",
            "--diff-max-batch-size",
            "50",
            "--diff-optimization-level",
            "aggressive",
        ],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("active"), "{stdout}");
    let (code, stdout, stderr) = run(&ctl, &["singletons", "pause", "--all"], &env).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("paused processor, then scheduler, then diff"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&ctl, &["singletons", "pause", "diff"], &env).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("diff was already paused"), "{stdout}");
    let (code, stdout, stderr) = run(
        &ctl,
        &["singletons", "update", "diff", "--max-batch-size", "64"],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, stdout, _) = run(&ctl, &["--json", "singletons", "status"], &env).await;
    assert_eq!(code, Some(0));
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let diff = &status["singletons"][2];
    // Proto3 JSON: enums by value name, the config oneof inlined.
    assert_eq!(diff["kind"], "SINGLETON_KIND_DIFF", "{stdout}");
    assert_eq!(diff["status"], "SINGLETON_STATUS_PAUSED", "{stdout}");
    assert_eq!(diff["version"], 2, "{stdout}");
    assert_eq!(diff["diff"]["maxBatchSize"], 64, "{stdout}");
    assert_eq!(
        diff["diff"]["optimizationLevel"], "OPTIMIZATION_LEVEL_AGGRESSIVE",
        "{stdout}"
    );
    assert_eq!(net.chain_statuses(), vec![2, 2, 2]);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_operation_shows_in_health_and_the_log_and_a_separate_authority_signs() {
    // Enough for fees, not for the state account's rent: initialize fails on chain.
    let authority = Keypair::new();
    let net = SingletonNet::start_with(1_000_000, Some(authority.insecure_clone())).await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = net.config(&db);
    let server = TestServer::start_with(db, config).await;
    let mut client = admin(&server).await;
    let request = InitializeSingletonsRequest {
        processor: Some(processor()),
        ..Default::default()
    };
    let before = head(&server).await;
    let err = client
        .initialize_singletons(request.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::FailedPrecondition | Code::Unavailable),
        "{err:?}"
    );
    assert!(
        err.message().contains("processor initialize"),
        "{}",
        err.message()
    );
    let infos = get(&server).await;
    assert_eq!(statuses(&infos)[0], SingletonStatus::Error);
    let health = infos[0].health.clone().unwrap();
    assert_eq!((health.operations_total, health.failures_total), (1, 1));
    assert_eq!(health.success_rate, 0.0);
    assert!(!health.last_error.is_empty());
    let events = server
        .lifecycle()
        .await
        .list_events(ListEventsRequest {
            after_sequence: Some(before),
            event_type: EventType::SingletonOperation as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let Some(Payload::SingletonOperation(op)) = &events[0].payload else {
        panic!("{events:?}");
    };
    assert_eq!(
        (op.singleton.as_str(), op.operation.as_str()),
        ("processor", "initialize")
    );
    assert!(!op.error.is_empty());
    assert!(net.state(Kind::Processor).is_none());

    // Funded, the retry succeeds; the configured authority owns the state.
    tokio::task::block_in_place(|| {
        net.net
            .surfnet
            .cheatcodes()
            .fund_sol(&net.wallet.pubkey(), 10_000_000_000)
            .unwrap()
    });
    let infos = client
        .initialize_singletons(request)
        .await
        .unwrap()
        .into_inner()
        .singletons;
    assert_eq!(statuses(&infos), vec![SingletonStatus::Active]);
    let health = infos[0].health.clone().unwrap();
    assert_eq!(health.success_rate, 0.5);
    assert!(health.last_error.is_empty());
    let state = net.state(Kind::Processor).unwrap();
    assert_eq!(state.authority, authority.pubkey().to_bytes());
    assert_ne!(authority.pubkey(), net.wallet.pubkey());
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_chain_has_the_singleton_programs_out_of_the_box() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = crate::common::test_config(&db.url);
    config.rpc.embedded = true;
    let server = TestServer::start_with(db, config).await;
    let infos = admin(&server)
        .await
        .initialize_singletons(InitializeSingletonsRequest {
            processor: Some(processor()),
            scheduler: Some(scheduler()),
            diff: Some(diff()),
        })
        .await
        .unwrap()
        .into_inner()
        .singletons;
    assert_eq!(statuses(&infos), vec![SingletonStatus::Active; 3]);
    for (info, kind) in infos.iter().zip(KINDS) {
        assert_eq!(
            info.program_id,
            valence_lifecycle_server::singletons::default_program_id(kind).to_string()
        );
    }
    assert!(server.stop().await);
}
