//! The replica's health as `/health` reports it: one overall status from
//! the components' states, plus singleton health and the leader, each read
//! under a short bound so the probe answers in well under a second even
//! when the store hangs.

use std::time::Duration;

use valence_lifecycle_api::v1::{ComponentState, ComponentStatus, LeaderInfo};

use crate::{
    store::{now_ms, timestamp},
    AppState,
};

/// How long the store reads of a health probe may take together.
const STORE_BOUND: Duration = Duration::from_millis(300);

/// The overall status of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overall {
    /// Every component is running.
    Healthy,
    /// Still serving, but a resource is impaired or a component is starting
    /// or stopping (a replica taking or giving up the lead).
    Degraded,
    /// A component is down.
    Unhealthy,
}

impl Overall {
    /// The name `/health` reports.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Overall::Healthy => "healthy",
            Overall::Degraded => "degraded",
            Overall::Unhealthy => "unhealthy",
        }
    }

    /// From the components' states.
    pub(crate) fn of(components: &[ComponentStatus]) -> Overall {
        let states: Vec<ComponentState> = components
            .iter()
            .map(|c| ComponentState::try_from(c.state).unwrap_or(ComponentState::Unspecified))
            .collect();
        if states.iter().all(|s| *s == ComponentState::Running) {
            return Overall::Healthy;
        }
        let serving = states.iter().all(|s| {
            matches!(
                s,
                ComponentState::Running
                    | ComponentState::Degraded
                    | ComponentState::Starting
                    | ComponentState::Stopping
            )
        });
        if serving {
            Overall::Degraded
        } else {
            Overall::Unhealthy
        }
    }
}

/// What a health probe reports.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    /// The overall status.
    pub status: Overall,
    /// Who leads (from the store when it answered in time).
    pub leader: LeaderInfo,
    /// Per-component states from the status board.
    pub components: Vec<ComponentStatus>,
    /// Per-singleton health; None when the store did not answer in time.
    pub singletons: Option<Vec<serde_json::Value>>,
    /// When this was checked.
    pub checked_at: valence_lifecycle_api::Timestamp,
}

/// The replica's health now; never waits on the store for more than
/// [`STORE_BOUND`].
pub(crate) async fn check(state: &AppState) -> Health {
    let components = state.board.snapshot();
    let status = Overall::of(&components);
    let (singletons, leader) = tokio::join!(
        tokio::time::timeout(STORE_BOUND, state.singletons.health_json()),
        tokio::time::timeout(STORE_BOUND, state.leadership.info(&state.store)),
    );
    let leader = leader.unwrap_or_else(|_| LeaderInfo {
        replica_id: state.leadership.replica_id().to_string(),
        is_leader: state.leadership.is_leader(),
        ..Default::default()
    });
    Health {
        status,
        leader,
        components,
        singletons: singletons.ok().and_then(Result::ok),
        checked_at: timestamp(now_ms()),
    }
}
