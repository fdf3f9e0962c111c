//! Which components run, in which order (seed 004): the store check and
//! the event log first, then leadership and the leader's work, the shard
//! leases and each held shard's chain work, then the listeners. Shutdown
//! runs the other way round.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use tokio::net::TcpListener;

use crate::{
    chain, events, gateway, grpc, leader, orchestrator, shards,
    supervisor::{
        health::{self, Check},
        Ctx, Policy, Supervisor,
    },
    AppState,
};

/// Component names, as the status board, `/health`, metrics and the
/// component events spell them.
pub(crate) mod names {
    pub(crate) const STORE: &str = "store";
    pub(crate) const EVENTS: &str = "events";
    pub(crate) const RETENTION: &str = "retention";
    pub(crate) const LEADER_ELECTION: &str = "leader-election";
    pub(crate) const LEADER_DUTIES: &str = "leader-duties";
    pub(crate) const SHARD_LEASES: &str = "shard-leases";
    pub(crate) const MONITOR: &str = "monitor";
    pub(crate) const BUILDER: &str = "builder";
    pub(crate) const ORCHESTRATOR: &str = "orchestrator";
    pub(crate) const GRPC: &str = "grpc";
    pub(crate) const GATEWAY: &str = "gateway";
}

/// Starts every component of this replica.
pub(crate) async fn start(
    supervisor: &mut Supervisor,
    state: &Arc<AppState>,
    grpc_listener: TcpListener,
    api_listener: TcpListener,
) -> anyhow::Result<()> {
    start_store_check(supervisor, state).await;
    start_chain_checks(supervisor, state).await;
    let hub = state.hub.clone();
    supervisor
        .start(names::EVENTS, move |ctx| hub.clone().run_tailer(ctx))
        .await;
    let s = state.clone();
    supervisor
        .start(names::RETENTION, move |ctx| {
            let (store, events, metrics) =
                (s.store.clone(), s.config.events.clone(), s.metrics.clone());
            events::retention::run(store, events, metrics, ctx)
        })
        .await;
    let s = state.clone();
    supervisor
        .start(names::LEADER_ELECTION, move |ctx| {
            leader::run_election(
                s.leadership.clone(),
                s.store.clone(),
                s.config.leader.clone(),
                ctx,
            )
        })
        .await;
    let s = state.clone();
    supervisor
        .start(names::LEADER_DUTIES, move |ctx| {
            leader_duties(s.clone(), ctx)
        })
        .await;
    if state.chain.is_some() {
        let s = state.clone();
        supervisor
            .start(names::SHARD_LEASES, move |ctx| {
                shards::leases::run(s.clone(), ctx)
            })
            .await;
    }
    start_listeners(supervisor, state, grpc_listener, api_listener).await
}

/// gRPC and REST. The first run serves the listener bound at start; a
/// restart binds the same address again (the old socket closed with the
/// failed run, so clients are refused rather than left hanging meanwhile).
async fn start_listeners(
    supervisor: &mut Supervisor,
    state: &Arc<AppState>,
    grpc_listener: TcpListener,
    api_listener: TcpListener,
) -> anyhow::Result<()> {
    let grpc = Rebindable::new(grpc_listener)?;
    let s = state.clone();
    supervisor
        .start(names::GRPC, move |ctx| {
            let (s, grpc) = (s.clone(), grpc.clone());
            async move {
                let serving = grpc::serve(s, grpc.take().await?, ctx.cancel.clone());
                ctx.heartbeat.beat_while(serving).await
            }
        })
        .await;
    let api = Rebindable::new(api_listener)?;
    let s = state.clone();
    supervisor
        .start(names::GATEWAY, move |ctx| {
            let (s, api) = (s.clone(), api.clone());
            async move {
                let serving = gateway::serve(s, api.take().await?, ctx.cancel.clone());
                ctx.heartbeat.beat_while(serving).await
            }
        })
        .await;
    Ok(())
}

/// A listener handed to the first run, and re-bound at the same address
/// for later ones.
#[derive(Clone)]
struct Rebindable {
    first: Arc<std::sync::Mutex<Option<TcpListener>>>,
    addr: std::net::SocketAddr,
}

impl Rebindable {
    fn new(listener: TcpListener) -> anyhow::Result<Self> {
        Ok(Rebindable {
            addr: listener.local_addr()?,
            first: Arc::new(std::sync::Mutex::new(Some(listener))),
        })
    }

    async fn take(&self) -> anyhow::Result<TcpListener> {
        let first = self.first.lock().expect("listener slot").take();
        match first {
            Some(listener) => Ok(listener),
            None => Ok(TcpListener::bind(self.addr)
                .await
                .with_context(|| format!("binding {} again", self.addr))?),
        }
    }
}

/// The store check: pings the database every health-check interval, with
/// a timeout, and flips gRPC health with the answer.
async fn start_store_check(supervisor: &mut Supervisor, state: &Arc<AppState>) {
    let probe_state = state.clone();
    let change_state = state.clone();
    let check = Check {
        name: names::STORE.into(),
        every: Duration::from_secs(state.config.monitoring.health_check_interval_secs),
        timeout: Duration::from_secs(5),
        probe: Arc::new(move || {
            let s = probe_state.clone();
            Box::pin(async move { Ok(s.store.ping().await?) })
        }),
        on_change: Some(Arc::new(move |healthy| {
            let s = change_state.clone();
            Box::pin(async move { grpc::set_health(&s, healthy).await })
        })),
    };
    let board = state.board.clone();
    supervisor
        .start(names::STORE, move |ctx| {
            health::run(check.clone(), board.clone(), ctx)
        })
        .await;
}

/// The chain's resource checks (RPC, wallet), on every replica.
async fn start_chain_checks(supervisor: &mut Supervisor, state: &Arc<AppState>) {
    let Some(chain) = &state.chain else {
        return;
    };
    let every = Duration::from_secs(state.config.monitoring.health_check_interval_secs);
    let timeout = Duration::from_secs(state.config.rpc.timeout_secs + 1);
    let min = state.config.service.min_wallet_balance_lamports;
    let checks = [
        Some(chain::checks::rpc(chain, &state.metrics, every, timeout)),
        chain::checks::wallet(chain, &state.metrics, min, every, timeout),
    ];
    for check in checks.into_iter().flatten() {
        let (board, name) = (state.board.clone(), check.name.clone());
        supervisor
            .start(&name, move |ctx| {
                health::run(check.clone(), board.clone(), ctx)
            })
            .await;
    }
}

/// While this replica leads, runs the work of no shard (the orchestrator)
/// under its own supervisor; stops it when leadership ends. Each shard's
/// chain work follows its lease instead (see `shards::leases`).
async fn leader_duties(state: Arc<AppState>, ctx: Ctx) -> anyhow::Result<()> {
    let mut leading = state.leadership.watch();
    let mut duties: Option<Supervisor> = None;
    let mut beat = ctx.heartbeat.ticker();
    loop {
        let lead = *leading.borrow_and_update();
        if lead && duties.is_none() {
            tracing::info!("leading: starting the orchestrator");
            let mut group =
                Supervisor::new(state.board.clone(), Policy::from(&state.config.supervision));
            start_orchestrator(&mut group, &state).await;
            duties = Some(group);
        } else if !lead {
            if let Some(group) = duties.take() {
                stop_duties(group, &state).await;
            }
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            changed = leading.changed() => if changed.is_err() { break },
            _ = beat.tick() => {}
        }
        ctx.heartbeat.beat();
    }
    if let Some(group) = duties.take() {
        stop_duties(group, &state).await;
    }
    Ok(())
}

/// The orchestrator runs with or without a chain (without one, rules are
/// evaluated and chain actions fail with a clear reason). Each run reloads
/// its state from the store and resumes open actions, so restarts and a
/// new leader pick up where the last run stopped.
async fn start_orchestrator(group: &mut Supervisor, state: &Arc<AppState>) {
    let orchestrator = match orchestrator::Orchestrator::new(
        state.chain.clone(),
        state.store.clone(),
        state.metrics.clone(),
        &state.config,
    ) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            tracing::error!(error = %e, "the orchestrator could not be set up");
            return;
        }
    };
    let hub = state.hub.clone();
    group
        .start(names::ORCHESTRATOR, move |ctx| {
            let running = orchestrator
                .clone()
                .run(hub.watch_head(), ctx.cancel.clone());
            async move { ctx.heartbeat.beat_while(running).await }
        })
        .await;
}

/// Stops the leader's components and takes them off the board: on a
/// follower they are not failed, just not here.
async fn stop_duties(group: Supervisor, state: &Arc<AppState>) {
    if !stop_group(group, Vec::new(), state).await {
        // Already logged and in the event log; it does not run here any more.
        tracing::warn!("a leader duty did not stop cleanly");
    }
}

/// Stops a group of components that runs here only while this replica
/// holds something (the lead, a shard's lease), then takes them and
/// `also` (what they put on the board themselves) off the board. Whether
/// they stopped cleanly.
pub(crate) async fn stop_group(
    group: Supervisor,
    also: Vec<String>,
    state: &Arc<AppState>,
) -> bool {
    let mut names = group.names();
    names.extend(also);
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let clean = group.shutdown(grace).await;
    for name in names {
        state.board.unregister(&name);
    }
    clean
}
