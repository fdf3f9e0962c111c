//! The status board: every component's current state (seed 004's states),
//! read by /health, GetStats and gRPC health, and written by the
//! supervisor. Each change is also a lifecycle event and a metric.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
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
        let mut entries = self.entries.write().expect("status board lock");
        let order = entries.len();
        entries.entry(name.to_string()).or_insert(Entry {
            order,
            status: ComponentStatus {
                name: name.to_string(),
                state: ComponentState::Uninitialized as i32,
                message: String::new(),
                since: Some(timestamp(now_ms())),
                restarts: 0,
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
            self.metrics
                .component_state
                .get_or_create(&ComponentLabels {
                    component: name.to_string(),
                })
                .set(state as u64);
            self.record(name, previous, state, &message).await;
        }
        previous
    }

    fn update(&self, name: &str, state: ComponentState, message: &str) -> ComponentState {
        let mut entries = self.entries.write().expect("status board lock");
        let order = entries.len();
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
            order,
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
        if let Err(e) = self
            .store
            .append_events(vec![NewEvent::new(name, payload)])
            .await
        {
            tracing::warn!(component = name, error = %e, "could not record component state change");
        }
    }

    /// Every component's status, in registration order.
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        let entries = self.entries.read().expect("status board lock");
        let mut list: Vec<&Entry> = entries.values().collect();
        list.sort_by_key(|e| e.order);
        list.into_iter().map(|e| e.status.clone()).collect()
    }

    /// One component's state.
    pub fn state(&self, name: &str) -> ComponentState {
        let entries = self.entries.read().expect("status board lock");
        entries
            .get(name)
            .and_then(|e| ComponentState::try_from(e.status.state).ok())
            .unwrap_or(ComponentState::Unspecified)
    }

    /// True when every registered component is Running.
    pub fn all_running(&self) -> bool {
        self.snapshot()
            .iter()
            .all(|s| s.state == ComponentState::Running as i32)
    }
}
