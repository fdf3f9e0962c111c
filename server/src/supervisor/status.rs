//! The status board: every component's current state (seed 004's states),
//! read by /health, GetStats and gRPC health, and written by the
//! supervisor. Each change is also a lifecycle event and a metric.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use valence_lifecycle_api::v1::{
    lifecycle_event::Payload, ComponentEvent, ComponentState, ComponentStatus,
};

use crate::{
    store::{now_ms, timestamp, NewEvent, Store},
    telemetry::{metrics::ComponentLabels, Metrics},
};

struct Entry {
    order: usize,
    status: ComponentStatus,
    heartbeat: Option<super::Heartbeat>,
    /// The supervisor stopped restarting it (it stays in Error).
    given_up: bool,
}

/// Current state of every component.
pub struct StatusBoard {
    entries: RwLock<BTreeMap<String, Entry>>,
    store: Store,
    metrics: Arc<Metrics>,
}

impl StatusBoard {
    /// An empty board that records changes in `store`'s event log.
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(StatusBoard {
            entries: RwLock::new(BTreeMap::new()),
            store,
            metrics,
        })
    }

    /// Registers a component as Uninitialized (no event: nothing happened yet).
    pub fn register(&self, name: &str) {
        // Its restart counter exists at 0 from the start, so the first
        // restart is an increase Prometheus sees.
        let _ = self
            .metrics
            .component_restarts
            .get_or_create(&ComponentLabels {
                component: name.to_string(),
            });
        let mut entries = self.entries.write().expect("status board lock");
        let order = entries.len();
        entries.entry(name.to_string()).or_insert(Entry {
            order,
            heartbeat: None,
            given_up: false,
            status: ComponentStatus {
                name: name.to_string(),
                state: ComponentState::Uninitialized as i32,
                message: String::new(),
                since: Some(timestamp(now_ms())),
                restarts: 0,
                last_heartbeat: None,
            },
        });
    }

    /// Moves a component to `state`; appends the matching event when the
    /// state actually changed. Returns the previous state.
    pub async fn set(
        &self,
        name: &str,
        state: ComponentState,
        message: impl Into<String>,
    ) -> ComponentState {
        let message = message.into();
        let previous = self.update(name, state, &message);
        if previous != state {
            self.set_state_metric(name, state);
            self.record(name, previous, state, &message).await;
        }
        previous
    }

    fn update(&self, name: &str, state: ComponentState, message: &str) -> ComponentState {
        let mut entries = self.entries.write().expect("status board lock");
        let order = entries.len();
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
            order,
            heartbeat: None,
            given_up: false,
            status: ComponentStatus {
                name: name.to_string(),
                ..Default::default()
            },
        });
        let previous =
            ComponentState::try_from(entry.status.state).unwrap_or(ComponentState::Unspecified);
        if previous != state {
            entry.status.since = Some(timestamp(now_ms()));
        }
        entry.status.state = state as i32;
        entry.status.message = message.to_string();
        previous
    }

    /// A failed component will be restarted after `delay` (restart number
    /// `restart`): ComponentReconnecting, and the restart count grows.
    pub async fn restarting(&self, name: &str, restart: u32, delay: Duration, why: &str) {
        {
            let mut entries = self.entries.write().expect("status board lock");
            if let Some(entry) = entries.get_mut(name) {
                entry.status.restarts = restart;
            }
        }
        self.metrics
            .component_restarts
            .get_or_create(&ComponentLabels {
                component: name.to_string(),
            })
            .inc();
        tracing::warn!(
            component = name,
            restart,
            delay_ms = delay.as_millis() as u64,
            "restarting component"
        );
        let body = self.event_body(name, ComponentState::Error, why, restart, delay);
        self.append(name, Payload::ComponentReconnecting(body))
            .await;
    }

    /// A restarted component is running again: ComponentReconnected.
    pub async fn restarted(&self, name: &str, restart: u32) {
        let message = format!("restarted (restart {restart})");
        self.update(name, ComponentState::Running, &message);
        self.set_state_metric(name, ComponentState::Running);
        let body = self.event_body(
            name,
            ComponentState::Running,
            &message,
            restart,
            Duration::ZERO,
        );
        self.append(name, Payload::ComponentReconnected(body)).await;
    }

    /// A resource that reconnects by itself (a websocket) is back:
    /// Running and ComponentReconnected. A plain status change when it was
    /// not down.
    pub async fn reconnected(&self, name: &str, message: &str) {
        if self.state(name) != ComponentState::Degraded {
            self.set(name, ComponentState::Running, message).await;
            return;
        }
        self.update(name, ComponentState::Running, message);
        self.set_state_metric(name, ComponentState::Running);
        let body = self.event_body(name, ComponentState::Running, message, 0, Duration::ZERO);
        self.append(name, Payload::ComponentReconnected(body)).await;
    }

    /// The supervisor gave up after `restarts` restarts: the component
    /// stays in Error; ComponentReconnectFailed.
    pub async fn gave_up(&self, name: &str, restarts: u32, why: &str) {
        let message = format!("gave up after {restarts} restarts: {why}");
        tracing::error!(component = name, restarts, "giving up on component");
        self.update(name, ComponentState::Error, &message);
        if let Some(entry) = self
            .entries
            .write()
            .expect("status board lock")
            .get_mut(name)
        {
            entry.given_up = true;
        }
        let body = self.event_body(
            name,
            ComponentState::Error,
            &message,
            restarts,
            Duration::ZERO,
        );
        self.append(name, Payload::ComponentReconnectFailed(body))
            .await;
    }

    /// A component stopped beating for `timeout`: ComponentHeartbeatTimeout.
    pub async fn heartbeat_timeout(&self, name: &str, timeout: Duration) {
        tracing::error!(component = name, ?timeout, "component missed its heartbeat");
        let message = format!("no heartbeat for {timeout:?}");
        let state = self.state(name);
        let body = self.event_body(name, state, &message, 0, Duration::ZERO);
        self.append(name, Payload::ComponentHeartbeatTimeout(body))
            .await;
    }

    /// Removes a component that no longer runs in this replica (leader-only
    /// components after a step-down), so it does not count as failed.
    pub fn unregister(&self, name: &str) {
        self.entries
            .write()
            .expect("status board lock")
            .remove(name);
    }

    fn event_body(
        &self,
        name: &str,
        state: ComponentState,
        message: &str,
        attempt: u32,
        delay: Duration,
    ) -> ComponentEvent {
        ComponentEvent {
            component: name.to_string(),
            state: state as i32,
            previous_state: self.state(name) as i32,
            message: message.to_string(),
            attempt,
            delay_ms: delay.as_millis() as u64,
        }
    }

    fn set_state_metric(&self, name: &str, state: ComponentState) {
        self.metrics
            .component_state
            .get_or_create(&ComponentLabels {
                component: name.to_string(),
            })
            .set(state as u64);
    }

    async fn append(&self, name: &str, payload: Payload) {
        if let Err(e) = self
            .store
            .append_events(vec![NewEvent::new(name, payload)])
            .await
        {
            tracing::warn!(component = name, error = %e, "could not record a component event");
        }
    }

    /// Appends the lifecycle event for a state change. Failing to record it
    /// must not take the component down, so errors are only logged.
    async fn record(
        &self,
        name: &str,
        previous: ComponentState,
        state: ComponentState,
        message: &str,
    ) {
        let body = ComponentEvent {
            component: name.to_string(),
            state: state as i32,
            previous_state: previous as i32,
            message: message.to_string(),
            attempt: 0,
            delay_ms: 0,
        };
        let payload = match state {
            ComponentState::Running if previous == ComponentState::Starting => {
                Payload::ComponentStarted(body)
            }
            ComponentState::Stopped => Payload::ComponentStopped(body),
            ComponentState::Error => Payload::ComponentError(body),
            _ => Payload::ComponentStatusChanged(body),
        };
        tracing::info!(component = name, from = ?previous, to = ?state, message, "component state changed");
        self.append(name, payload).await;
    }

    /// Shows `heartbeat`'s last beat in `name`'s status (each run of a
    /// component has a fresh heartbeat).
    pub fn attach_heartbeat(&self, name: &str, heartbeat: super::Heartbeat) {
        if let Some(entry) = self
            .entries
            .write()
            .expect("status board lock")
            .get_mut(name)
        {
            entry.heartbeat = Some(heartbeat);
        }
    }

    /// Every component's status, in registration order.
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        let entries = self.entries.read().expect("status board lock");
        let mut list: Vec<&Entry> = entries.values().collect();
        list.sort_by_key(|e| e.order);
        list.into_iter()
            .map(|e| {
                let mut status = e.status.clone();
                status.last_heartbeat = e.heartbeat.as_ref().map(|h| timestamp(h.last_ms()));
                status
            })
            .collect()
    }

    /// One component's state and since when it holds (None: not registered).
    pub fn state_since(&self, name: &str) -> Option<(i32, i64)> {
        let entries = self.entries.read().expect("status board lock");
        let status = &entries.get(name)?.status;
        let since = status
            .since
            .as_ref()
            .map_or(0, |t| t.seconds * 1_000 + i64::from(t.nanos / 1_000_000));
        Some((status.state, since))
    }

    /// One component's state.
    pub fn state(&self, name: &str) -> ComponentState {
        let entries = self.entries.read().expect("status board lock");
        entries
            .get(name)
            .and_then(|e| ComponentState::try_from(e.status.state).ok())
            .unwrap_or(ComponentState::Unspecified)
    }

    /// Whether every component is alive, for the systemd watchdog: none
    /// given up on by the supervisor, and every running one beating within
    /// `stale` (a restarting component counts as alive: the supervisor
    /// still looks after it). The error names the first dead component.
    pub fn alive(&self, stale: Duration) -> Result<(), String> {
        let entries = self.entries.read().expect("status board lock");
        let now = now_ms();
        for (name, entry) in entries.iter() {
            if entry.given_up {
                return Err(format!(
                    "{name}: given up after {} restarts",
                    entry.status.restarts
                ));
            }
            let running = entry.status.state == ComponentState::Running as i32;
            if let (true, Some(beat)) = (running, &entry.heartbeat) {
                let silent_ms = now - beat.last_ms();
                if silent_ms > stale.as_millis() as i64 {
                    return Err(format!("{name}: no heartbeat for {silent_ms} ms"));
                }
            }
        }
        Ok(())
    }

    /// Whether every component has started and none is down (each is
    /// Running or Degraded): the replica serves, for systemd's READY=1.
    pub fn serving(&self) -> bool {
        let entries = self.entries.read().expect("status board lock");
        !entries.is_empty()
            && entries.values().all(|e| {
                e.status.state == ComponentState::Running as i32
                    || e.status.state == ComponentState::Degraded as i32
            })
    }

    /// True when every registered component is Running.
    pub fn all_running(&self) -> bool {
        self.snapshot()
            .iter()
            .all(|s| s.state == ComponentState::Running as i32)
    }
}
