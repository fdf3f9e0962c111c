//! The Valence Lifecycle Manager server: gRPC API, REST gateway, event log
//! and the components that keep the lifecycle moving.
//!
//! [`serve`] is what `main` runs; [`serve_with_listeners`] is the same code
//! on listeners the caller bound (tests bind `127.0.0.1:0`).

pub(crate) mod auth;
pub mod builder;
pub mod chain;
mod components;
pub mod config;
pub(crate) mod connections;
pub mod error;
pub(crate) mod events;
pub(crate) mod gateway;
pub(crate) mod grpc;
pub(crate) mod leader;
pub(crate) mod monitor;
pub mod notify;
pub mod orchestrator;
#[cfg(test)]
mod proptests;
pub(crate) mod service;
pub(crate) mod shards;
pub mod singletons;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub(crate) mod validate;
pub(crate) mod wire;

use std::{sync::Arc, time::Duration, time::Instant};

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Auth,
    chain::Chain,
    config::Config,
    events::EventHub,
    store::{now_ms, Store},
    supervisor::{StatusBoard, Supervisor},
    telemetry::Metrics,
};

/// Everything request handlers and components share.
pub(crate) struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// The live side of the event log.
    pub hub: Arc<EventHub>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Component states.
    pub board: Arc<StatusBoard>,
    /// Access control.
    pub auth: Arc<Auth>,
    /// The listeners' TLS certificates, when `[tls]` is configured.
    pub tls: Option<Arc<connections::Tls>>,
    /// gRPC health statuses.
    pub health: tonic_health::server::HealthReporter,
    /// The grpc.health.v1 service reporting them.
    pub health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    /// Fires when open event streams must end (shutdown).
    pub streams: CancellationToken,
    /// The Solana network watched, if any.
    pub chain: Option<Chain>,
    /// Singleton administration.
    pub singletons: Arc<singletons::Singletons>,
    /// Whether this replica leads (runs the work of no shard).
    pub leadership: Arc<leader::Leadership>,
    /// The shard programs watched.
    pub shards: Arc<shards::ShardSet>,
    pub(crate) started: Instant,
    pub(crate) started_at_ms: i64,
}

impl AppState {
    /// Updates gauges that mirror stored state, before a scrape.
    pub(crate) async fn refresh_gauges(&self) {
        self.metrics
            .service_uptime_seconds
            .set(self.started.elapsed().as_secs());
        for component in self.board.snapshot() {
            if let Some(beat) = component.last_heartbeat {
                self.metrics
                    .component_last_heartbeat
                    .get_or_create(&telemetry::metrics::ComponentLabels {
                        component: component.name,
                    })
                    .set(beat.seconds.max(0) as u64);
            }
        }
        match self.store.stats().await {
            Ok(s) => {
                self.metrics.active_sessions.set(s.active_sessions);
                self.metrics.active_accounts.set(s.accounts);
                self.metrics
                    .queue_size
                    .get_or_create(&telemetry::metrics::QueueLabels {
                        queue: "builder".into(),
                    })
                    .set(s.pending_requests);
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh gauges from the store"),
        }
        self.singletons.refresh_gauges().await;
    }
}

/// Binds the configured ports and serves until SIGINT/SIGTERM. Returns
/// whether shutdown was clean.
pub async fn serve(config: Config) -> anyhow::Result<bool> {
    let grpc = TcpListener::bind(config.grpc_addr())
        .await
        .with_context(|| {
            format!(
                "binding gRPC to {} (server.grpc_port / GRPC_PORT)",
                config.grpc_addr()
            )
        })?;
    let api = TcpListener::bind(config.api_addr())
        .await
        .with_context(|| {
            format!(
                "binding the REST gateway to {} (server.api_port / API_PORT)",
                config.api_addr()
            )
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_to_cancel(shutdown.clone()));
    run(
        config,
        grpc,
        api,
        shutdown,
        notify::Notifier::from_env(),
        true,
    )
    .await
}

/// Re-reads the token files and the TLS certificate and key on every
/// SIGHUP until `stop` (rotation without a restart; `systemctl reload`
/// sends it). A failed reload keeps the tokens (or certificates) in force;
/// open connections keep the certificate they were served. The handler is
/// installed before this returns, so a SIGHUP after start-up never takes
/// its default action (exit).
fn reload_secrets_on_sighup(
    auth: Arc<Auth>,
    tls: Option<Arc<connections::Tls>>,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot listen for SIGHUP: tokens and TLS certificates are read at start only"
            );
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                match auth.reload() {
                    Ok(tokens) => tracing::info!(tokens, "SIGHUP: auth tokens reloaded"),
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "SIGHUP: reloading auth tokens failed; the previous tokens stay"
                    ),
                }
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                        Err(e) => tracing::error!(
                            error = format!("{e:#}"),
                            "SIGHUP: reloading the TLS certificate failed; the previous one stays"
                        ),
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (auth, tls, stop);
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn signal_to_cancel(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
    token.cancel();
}

/// Refuses to expose an unauthenticated server beyond loopback; warns when
/// tokens would cross the network in plaintext (no `[tls]`).
fn check_exposure(config: &Config, grpc: &TcpListener, api: &TcpListener) -> anyhow::Result<()> {
    for addr in [grpc.local_addr()?, api.local_addr()?] {
        if addr.ip().is_loopback() {
            continue;
        }
        if !config.auth.tokens.is_empty() {
            if !config.tls.enabled() {
                tracing::warn!(
                    %addr,
                    "listening beyond loopback without TLS: bearer tokens cross the network in \
                     plaintext; configure [tls] (TLS_CERT_PATH, TLS_KEY_PATH)"
                );
            }
        } else {
            bail!(
                "refusing to listen on {addr}: no auth tokens are configured, so every caller would have every role; \
                 configure [[auth.tokens]] or bind to 127.0.0.1 (server.bind_address / BIND_ADDRESS)"
            );
        }
    }
    Ok(())
}

/// Runs the server on already-bound listeners until `shutdown` fires.
/// Components start in dependency order and stop in reverse; in-flight
/// requests finish within `server.shutdown_grace_secs`. Returns whether
/// shutdown was clean.
pub async fn serve_with_listeners(
    config: Config,
    grpc_listener: TcpListener,
    api_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<bool> {
    run(
        config,
        grpc_listener,
        api_listener,
        shutdown,
        notify::Notifier::disabled(),
        false,
    )
    .await
}

/// [`serve_with_listeners`], telling systemd through `notifier`.
async fn run(
    config: Config,
    grpc_listener: TcpListener,
    api_listener: TcpListener,
    shutdown: CancellationToken,
    notifier: notify::Notifier,
    reload_on_sighup: bool,
) -> anyhow::Result<bool> {
    check_exposure(&config, &grpc_listener, &api_listener)?;
    connections::raise_open_files_limit(&config);
    // One server per SQLite file (none needed on PostgreSQL); held until
    // this function returns.
    let _process_lock = store::ProcessLock::acquire(&config.database.url)?;
    let store = Store::connect(&config.database)
        .await
        .context("the store is required at start (database.url / DATABASE_URL)")?;
    tracing::info!(backend = store.backend().name(), "store ready");
    let (chain, embedded) = connect_chain(&config).await?;
    let shards =
        shards::ShardSet::new(&config.shard_list()?, chain.as_ref().map(|c| c.program_id))?;
    adopt_unsharded_rows(&store, &shards).await?;
    let singletons = singletons::Setup::resolve(&config, embedded.is_some())?;
    let auth = Arc::new(Auth::new(&config.auth)?);
    let tls = connections::Tls::load(&config.tls)?;
    let state = build_state(config, store.clone(), chain, singletons, auth, tls, shards);
    // The store answered (connect ran the migrations), so the services can
    // serve as soon as the listener is up; the store watcher turns this
    // NotServing whenever the store stops answering.
    grpc::set_health(&state, true).await;

    // Token reloads and systemd notifications, until shutdown.
    let background = CancellationToken::new();
    if reload_on_sighup {
        reload_secrets_on_sighup(state.auth.clone(), state.tls.clone(), background.clone());
    }
    let mut supervisor = Supervisor::new(
        state.board.clone(),
        supervisor::Policy::from(&state.config.supervision),
    );
    components::start(&mut supervisor, &state, grpc_listener, api_listener).await?;
    tracing::info!("valence lifecycle manager running");
    {
        let (notifier, board, stop) = (notifier.clone(), state.board.clone(), background.clone());
        // A component silent for twice its heartbeat timeout is one the
        // supervisor could not restart: the process is stuck.
        let stale = 2 * Duration::from_millis(state.config.supervision.heartbeat_timeout_ms);
        tokio::spawn(async move {
            notifier.ready_when_serving(&board, &stop).await;
            notifier.feed_watchdog(board, stale, stop).await;
        });
    }

    shutdown.cancelled().await;
    background.cancel();
    notifier.stopping();
    grpc::set_health(&state, false).await;
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let clean = supervisor.shutdown(grace).await;
    store.close().await;
    drop_embedded(embedded).await;
    tracing::info!(clean, "shut down");
    Ok(clean)
}

/// Rows stored before shards existed belong to the only shard, when there
/// is one (with several, which shard held them is not known: they stay
/// unassigned, listed under no shard filter).
async fn adopt_unsharded_rows(store: &Store, shards: &shards::ShardSet) -> anyhow::Result<()> {
    if let [only] = shards.all() {
        let moved = store
            .assign_unsharded_rows(&only.id)
            .await
            .context("assigning rows stored before shards existed to the only shard")?;
        if moved > 0 {
            tracing::info!(shard = %only.name, rows = moved, "rows stored before shards existed assigned to the only shard");
        }
    }
    Ok(())
}

/// The embedded network, when the server started one (kept alive until shutdown).
#[cfg(feature = "embedded-chain")]
type Embedded = Option<chain::embedded::EmbeddedChain>;
#[cfg(not(feature = "embedded-chain"))]
type Embedded = Option<()>;

/// The chain to watch: the configured RPC, the embedded network when no
/// RPC is configured, or none (`rpc.embedded = false`).
async fn connect_chain(config: &Config) -> anyhow::Result<(Option<Chain>, Embedded)> {
    // The chain watches the first shard program; each shard's work gets a
    // copy for its own program (Chain::for_program).
    let listed = config.shard_list()?;
    let configured_program = listed
        .first()
        .map(|s| s.id.parse::<solana_sdk::pubkey::Pubkey>())
        .transpose()
        .context("lifecycle.shard_program_id (SHARD_PROGRAM_ID)")?;
    if !config.rpc.url.is_empty() {
        let ws = if config.rpc.ws_url.is_empty() {
            chain::derive_ws_url(&config.rpc.url)
        } else {
            config.rpc.ws_url.clone()
        };
        let program =
            configured_program.context("lifecycle.shard_program_id is required with rpc.url")?;
        let mut chain = Chain::new(config, config.rpc.url.clone(), ws, program, false);
        if !config.service.keypair_path.is_empty() {
            chain = chain.with_wallet(chain::wallet::load(std::path::Path::new(
                &config.service.keypair_path,
            ))?);
        }
        tracing::info!(rpc = %chain.rpc_url, ws = %chain.ws_url, program = %program, "watching a Solana cluster");
        return Ok((Some(chain), None));
    }
    if !config.rpc.embedded {
        tracing::info!(
            "no chain configured (rpc.url empty, rpc.embedded false): the monitor is off"
        );
        return Ok((None, None));
    }
    start_embedded(config, configured_program).await
}

#[cfg(feature = "embedded-chain")]
async fn start_embedded(
    config: &Config,
    program: Option<solana_sdk::pubkey::Pubkey>,
) -> anyhow::Result<(Option<Chain>, Embedded)> {
    let program = program.unwrap_or_else(chain::embedded::default_program_id);
    let embedded = chain::embedded::EmbeddedChain::start(program).await?;
    // Every further configured shard gets the stand-in too.
    for shard in config.shard_list()?.iter().skip(1) {
        embedded.deploy_stand_in(shard.id.parse()?)?;
    }
    for singleton in singletons::Setup::embedded_programs(config)? {
        embedded.deploy_stand_in(singleton)?;
    }
    let chain = Chain::new(config, embedded.rpc_url(), embedded.ws_url(), program, true);
    let wallet = if config.service.keypair_path.is_empty() {
        // 100 SOL: plenty for rent of the accounts a local demo creates.
        chain::wallet::funded(chain.rpc(), 100_000_000_000).await?
    } else {
        chain::wallet::load(std::path::Path::new(&config.service.keypair_path))?
    };
    let chain = chain.with_wallet(wallet);
    tracing::info!(
        rpc = %chain.rpc_url,
        ws = %chain.ws_url,
        program = %program,
        "embedded Surfnet started with the stand-in shard program (set RPC_URL to use a real cluster)"
    );
    Ok((Some(chain), Some(embedded)))
}

#[cfg(not(feature = "embedded-chain"))]
async fn start_embedded(
    _config: &Config,
    _program: Option<solana_sdk::pubkey::Pubkey>,
) -> anyhow::Result<(Option<Chain>, Embedded)> {
    bail!("no rpc.url (RPC_URL) is configured and this build has no embedded chain (feature embedded-chain); set RPC_URL or rpc.embedded = false")
}

/// Stops the embedded network off the async threads (it waits for its ports).
#[cfg(feature = "embedded-chain")]
async fn drop_embedded(embedded: Embedded) {
    if let Some(e) = embedded {
        let _ = tokio::task::spawn_blocking(move || drop(e)).await;
    }
}

#[cfg(not(feature = "embedded-chain"))]
async fn drop_embedded(_embedded: Embedded) {}

fn build_state(
    config: Config,
    store: Store,
    chain: Option<Chain>,
    singletons: singletons::Setup,
    auth: Arc<Auth>,
    tls: Option<Arc<connections::Tls>>,
    shards: shards::ShardSet,
) -> Arc<AppState> {
    let metrics = Arc::new(Metrics::new());
    metrics.set_shard_names(shards.all().iter().map(|s| (s.id.clone(), s.name.clone())));
    let singletons = Arc::new(singletons::Singletons::new(
        singletons,
        store.clone(),
        chain.clone(),
        metrics.clone(),
    ));
    let board = StatusBoard::new(store.clone(), metrics.clone());
    let hub = EventHub::new(store.clone(), config.events.clone(), metrics.clone());
    let health = tonic_health::server::HealthReporter::new();
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health.clone()),
    );
    let (config_leader, metrics_for_leader) = (config.leader.clone(), metrics.clone());
    Arc::new(AppState {
        auth,
        tls,
        config: Arc::new(config),
        store,
        hub,
        metrics,
        board,
        health,
        health_service,
        streams: CancellationToken::new(),
        chain,
        singletons,
        leadership: leader::Leadership::new(&config_leader, metrics_for_leader),
        shards: Arc::new(shards),
        started: Instant::now(),
        started_at_ms: now_ms(),
    })
}
