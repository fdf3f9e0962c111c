//! Every Prometheus metric of the server, registered in one place. Names
//! follow seeds 000 and 001; prometheus-client appends `_total` to counters.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use valence_lifecycle_api::v1::{lifecycle_event::Payload, LifecycleEvent};

/// Registers `metrics.<field>` under its name and help for each line of
/// the table (`field => ("name", "help")`).
macro_rules! register_table {
    ($metrics:expr, { $($field:ident => ($name:literal, $help:literal)),+ $(,)? }) => {
        $( $metrics.registry.register($name, $help, $metrics.$field.clone()); )+
    };
}

/// Labels of per-RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`.
    pub method: String,
    /// gRPC status code name.
    pub code: String,
}

/// Labels of per-method latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `/package.Service/Method` or the REST route.
    pub method: String,
}

/// Labels of REST metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route pattern (`/accounts/{id}`), not the raw path.
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels naming a shard program (its configured name; the program id
/// when none is configured).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    /// Shard name.
    pub shard: String,
}

/// Labels of lease changes: the shard and what happened to its lease here.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseChangeLabels {
    /// Shard name.
    pub shard: String,
    /// acquired, released (handed over) or lost (taken or expired).
    pub change: String,
}

/// Labels naming a component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// Component name.
    pub component: String,
}

/// Labels naming a chain event type (as the program spells it), or
/// `record` for an account record written by the monitor.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabels {
    /// PDAComputed, SessionQueued, ... or record.
    pub event_type: String,
}

/// Labels naming a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// builder (account requests waiting) or session_factory (the chain's
    /// session queue).
    pub queue: String,
}

/// Labels naming where a chain update came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// reconciliation, websocket or logs.
    pub source: String,
}

/// Labels of decode failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecodeLabels {
    /// too_short, unknown_discriminator, malformed (event_* for log events).
    pub kind: String,
}

/// Labels of builder attempt outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// initialized, already_initialized, failed, unreachable,
    /// permanent_failure or hash_mismatch.
    pub outcome: String,
}

/// Labels of rule action outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// consume_and_create, execute_bundle or notify_webhook.
    pub kind: String,
    /// reported, executed, failed, expired or retried.
    pub outcome: String,
}

/// Labels of singleton operations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SingletonOpLabels {
    /// processor, scheduler or diff.
    pub kind: String,
    /// initialize, pause, resume or update_config.
    pub operation: String,
    /// success or failure.
    pub outcome: String,
}

/// Labels naming a singleton.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SingletonLabels {
    /// processor, scheduler or diff.
    pub kind: String,
}

/// Labels naming a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// grpc, rest or metrics.
    pub listener: String,
}

/// Labels of connections the server closed before their client did.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionCloseLabels {
    /// grpc, rest or metrics.
    pub listener: String,
    /// Refused: full or evicted; timed out: header or idle.
    pub reason: String,
}

/// Labels of the gateway's event streams.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamKindLabels {
    /// sse or websocket.
    pub kind: String,
}

/// Labels of gateway event streams that ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamEndLabels {
    /// sse or websocket.
    pub kind: String,
    /// client_gone, shutdown, out_of_range, failed or ping_timeout.
    pub reason: String,
}

type GaugeU64 = Gauge<u64, AtomicU64>;

/// All metrics; clone the fields (they are shared handles) to update them.
pub struct Metrics {
    registry: Registry,
    /// Account requests seen (seed 000).
    pub account_requests: Counter,
    /// Accounts initialized (seed 000).
    pub accounts_initialized: Counter,
    /// Sessions created (seed 000).
    pub sessions_created: Counter,
    /// Sessions consumed (seed 000).
    pub sessions_consumed: Counter,
    /// Live sessions (seed 000).
    pub active_sessions: GaugeU64,
    /// Active accounts (seed 000).
    pub active_accounts: GaugeU64,
    /// Rule evaluations (seed 000).
    pub rules_evaluated: Counter,
    /// Rule matches (seed 000).
    pub rules_matched: Counter,
    /// Rule actions by kind and outcome.
    pub rule_actions: Family<ActionLabels, Counter>,
    /// Seconds spent evaluating rules for one trigger (event batch or tick).
    pub rule_evaluation_duration: Histogram,
    /// Account initialization time (seed 000).
    pub account_initialization_duration: Histogram,
    /// Session lifetime (seed 000).
    pub session_lifetime: Histogram,
    /// Accounts created (seed 001).
    pub accounts_created: Counter,
    /// Account creations failed (seed 001).
    pub accounts_failed: Counter,
    /// Seconds from a chain event's confirmation to its recording (for
    /// PDAComputed, to its account verified on chain), by event type (seed 001).
    pub event_processing_duration: Family<EventTypeLabels, Histogram>,
    /// Events recorded later than seed 001's maximum delay for their type.
    pub event_deadline_missed: Family<EventTypeLabels, Counter>,
    /// Factory events the session state machine refused.
    pub session_anomalies: Family<EventTypeLabels, Counter>,
    /// Truncated transactions whose events could not all be recovered.
    pub chain_gaps: Counter,
    /// 1 when the chain RPC answers, 0 otherwise (seed 001).
    pub rpc_connection_status: GaugeU64,
    /// Seconds since start (seed 001).
    pub service_uptime_seconds: GaugeU64,
    /// Queue sizes (seed 001): the builder's backlog and the chain's session queue.
    pub queue_size: Family<QueueLabels, GaugeU64>,
    /// Service wallet balance (seed 001).
    pub wallet_balance_lamports: GaugeU64,
    /// Account creations talking to the chain now.
    pub builder_in_flight: GaugeU64,
    /// Most account creations in flight at once since start.
    pub builder_in_flight_peak: GaugeU64,
    /// Builder attempts by outcome.
    pub builder_attempts: Family<OutcomeLabels, Counter>,
    /// 1 while this replica leads.
    pub is_leader: GaugeU64,
    /// When this replica took the lead (Unix seconds; 0 while following).
    pub leader_since_seconds: GaugeU64,
    /// gRPC requests by method and code.
    pub grpc_requests: Family<RpcLabels, Counter>,
    /// gRPC latency by method.
    pub grpc_request_duration: Family<MethodLabels, Histogram>,
    /// REST requests by route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// REST latency by route.
    pub http_request_duration: Family<MethodLabels, Histogram>,
    /// Open event subscriptions.
    pub event_subscribers: GaugeU64,
    /// Open REST gateway event streams (also counted in event_subscribers), by kind.
    pub gateway_streams: Family<StreamKindLabels, GaugeU64>,
    /// REST gateway event streams that ended, by kind and reason.
    pub gateway_streams_ended: Family<StreamEndLabels, Counter>,
    /// Stream tickets by outcome: issued, accepted, expired or refused.
    pub stream_tickets: Family<OutcomeLabels, Counter>,
    /// Events appended to the log (as seen by this replica's tailer).
    pub events_appended: Counter,
    /// Events delivered to subscribers.
    pub events_delivered: Counter,
    /// How far behind the head a subscriber was at delivery, in sequences.
    pub subscriber_lag: Histogram,
    /// Times a subscriber fell behind the live buffer and was served from the store.
    pub subscriber_catch_ups: Counter,
    /// Events pruned by retention.
    pub events_pruned: Counter,
    /// Chain updates received, by source.
    pub chain_updates_received: Family<SourceLabels, Counter>,
    /// Chain updates applied, by source.
    pub chain_updates_processed: Family<SourceLabels, Counter>,
    /// Chain data that did not decode, by kind.
    pub chain_decode_failures: Family<DecodeLabels, Counter>,
    /// Chain updates skipped because the account's data had not changed.
    pub chain_updates_unchanged: Family<SourceLabels, Counter>,
    /// Accounts whose last applied data the monitor remembers.
    pub monitor_fingerprints: GaugeU64,
    /// Reconciliation pass time, RPC call included.
    pub reconciliation_duration: Histogram,
    /// Process CPU seconds spent during reconciliation passes.
    pub reconciliation_cpu: Counter<f64, AtomicU64>,
    /// Of that, the CPU spent receiving the getProgramAccounts answer.
    pub reconciliation_fetch_cpu: Counter<f64, AtomicU64>,
    /// Accounts seen by the last pass.
    pub reconciliation_accounts: GaugeU64,
    /// Accounts the last pass found changed.
    pub reconciliation_changed: GaugeU64,
    /// Chain records the store refused (retried at the next pass).
    pub chain_store_failures: Counter,
    /// NUL characters in on-chain strings stored as U+FFFD.
    pub chain_strings_replaced: Counter,
    /// Highest slot the monitor applied.
    pub last_processed_slot: GaugeU64,
    /// 1 for each shard whose lease this replica holds, 0 for the others.
    pub shard_owned: Family<ShardLabels, GaugeU64>,
    /// Each shard's lease epoch, as last read.
    pub shard_epoch: Family<ShardLabels, GaugeU64>,
    /// Highest slot each shard's monitor applied, as its owner last reported.
    pub shard_last_slot: Family<ShardLabels, GaugeU64>,
    /// Each shard's lag: the chain's slot minus its last applied slot.
    pub shard_lag: Family<ShardLabels, GaugeU64>,
    /// Writes of a shard's chain work refused because its epoch moved on.
    pub fenced_writes: Family<ShardLabels, Counter>,
    /// Lease changes on this replica, by shard and change.
    pub lease_changes: Family<LeaseChangeLabels, Counter>,
    /// Events appended, by the shard whose chain work produced them.
    pub shard_events: Family<ShardLabels, Counter>,
    /// Replicas with a fresh heartbeat, as this replica last counted.
    pub live_replicas: GaugeU64,
    /// Shard program id to name, for labelling events by shard.
    shard_names: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>,
    /// Component state (the ComponentState enum number).
    pub component_state: Family<ComponentLabels, GaugeU64>,
    /// Component restarts.
    pub component_restarts: Family<ComponentLabels, Counter>,
    /// When each component last beat (Unix seconds; set before a scrape).
    pub component_last_heartbeat: Family<ComponentLabels, GaugeU64>,
    /// Singleton operations by singleton, operation and outcome.
    pub singleton_operations: Family<SingletonOpLabels, Counter>,
    /// Singleton status (the SingletonStatus enum number).
    pub singleton_status: Family<SingletonLabels, GaugeU64>,
    /// Open client connections, by listener.
    pub connections_open: Family<ListenerLabels, GaugeU64>,
    /// Connections refused at the listener's cap, by listener and reason.
    pub connections_refused: Family<ConnectionCloseLabels, Counter>,
    /// Connections closed for a header-read or idle timeout.
    pub connections_timed_out: Family<ConnectionCloseLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            account_requests: Counter::default(),
            accounts_initialized: Counter::default(),
            sessions_created: Counter::default(),
            sessions_consumed: Counter::default(),
            active_sessions: Gauge::default(),
            active_accounts: Gauge::default(),
            rules_evaluated: Counter::default(),
            rules_matched: Counter::default(),
            rule_actions: Family::default(),
            rule_evaluation_duration: latency_histogram(),
            account_initialization_duration: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            session_lifetime: Histogram::new(exponential_buckets(1.0, 2.0, 20)),
            accounts_created: Counter::default(),
            accounts_failed: Counter::default(),
            event_processing_duration: Family::new_with_constructor(latency_histogram),
            event_deadline_missed: Family::default(),
            session_anomalies: Family::default(),
            chain_gaps: Counter::default(),
            rpc_connection_status: Gauge::default(),
            service_uptime_seconds: Gauge::default(),
            queue_size: Family::default(),
            wallet_balance_lamports: Gauge::default(),
            builder_in_flight: Gauge::default(),
            builder_in_flight_peak: Gauge::default(),
            builder_attempts: Family::default(),
            is_leader: Gauge::default(),
            leader_since_seconds: Gauge::default(),
            grpc_requests: Family::default(),
            grpc_request_duration: Family::new_with_constructor(latency_histogram),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(latency_histogram),
            event_subscribers: Gauge::default(),
            gateway_streams: Family::default(),
            gateway_streams_ended: Family::default(),
            stream_tickets: Family::default(),
            events_appended: Counter::default(),
            events_delivered: Counter::default(),
            subscriber_lag: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            subscriber_catch_ups: Counter::default(),
            events_pruned: Counter::default(),
            chain_updates_received: Family::default(),
            chain_updates_processed: Family::default(),
            chain_decode_failures: Family::default(),
            chain_updates_unchanged: Family::default(),
            monitor_fingerprints: Gauge::default(),
            reconciliation_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            reconciliation_cpu: Counter::default(),
            reconciliation_fetch_cpu: Counter::default(),
            reconciliation_accounts: Gauge::default(),
            reconciliation_changed: Gauge::default(),
            chain_store_failures: Counter::default(),
            chain_strings_replaced: Counter::default(),
            last_processed_slot: Gauge::default(),
            shard_owned: Family::default(),
            shard_epoch: Family::default(),
            shard_last_slot: Family::default(),
            shard_lag: Family::default(),
            fenced_writes: Family::default(),
            lease_changes: Family::default(),
            shard_events: Family::default(),
            live_replicas: Gauge::default(),
            shard_names: Default::default(),
            component_state: Family::default(),
            component_restarts: Family::default(),
            component_last_heartbeat: Family::default(),
            singleton_operations: Family::default(),
            singleton_status: Family::default(),
            connections_open: Family::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
        };
        m.register_all();
        m.zero_known_labels();
        m
    }

    /// Creates the children whose label values are known in advance at 0,
    /// so they are in /metrics from the first scrape: the dashboard and
    /// the alerts find the series, and `rate()`/`increase()` see the first
    /// event (a series born at 1 shows no increase).
    fn zero_known_labels(&self) {
        // Seed 001's deadline types, the factory's events and both queues.
        for (event_type, _) in crate::chain::codec::EVENT_DEADLINES_MS {
            let labels = EventTypeLabels {
                event_type: event_type.to_string(),
            };
            let _ = self.event_processing_duration.get_or_create(&labels);
            let _ = self.event_deadline_missed.get_or_create(&labels);
        }
        for event_type in [
            "SessionReserved",
            "SessionQueued",
            "SessionInitializedFromQueue",
            "ManualSessionInitialized",
            "EmergencySessionReset",
        ] {
            let _ = self.session_anomalies.get_or_create(&EventTypeLabels {
                event_type: event_type.to_string(),
            });
        }
        for queue in ["builder", "session_factory"] {
            let _ = self.queue_size.get_or_create(&QueueLabels {
                queue: queue.to_string(),
            });
        }
        for outcome in [
            "initialized",
            "already_initialized",
            "failed",
            "unreachable",
            "permanent_failure",
            "hash_mismatch",
        ] {
            let _ = self.builder_attempts.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        for kind in ["consume_and_create", "execute_bundle", "notify_webhook"] {
            for outcome in ["reported", "executed", "failed", "expired", "retried"] {
                let _ = self.rule_actions.get_or_create(&ActionLabels {
                    kind: kind.into(),
                    outcome: outcome.into(),
                });
            }
        }
        for source in ["reconciliation", "websocket", "logs"] {
            let labels = SourceLabels {
                source: source.into(),
            };
            let _ = self.chain_updates_received.get_or_create(&labels);
            let _ = self.chain_updates_processed.get_or_create(&labels);
            let _ = self.chain_updates_unchanged.get_or_create(&labels);
        }
        for kind in ["processor", "scheduler", "diff"] {
            for operation in ["initialize", "pause", "resume", "update_config"] {
                for outcome in ["success", "failure"] {
                    let _ = self.singleton_operations.get_or_create(&SingletonOpLabels {
                        kind: kind.into(),
                        operation: operation.into(),
                        outcome: outcome.into(),
                    });
                }
            }
        }
        for kind in ["too_short", "unknown_discriminator", "malformed"] {
            let _ = self
                .chain_decode_failures
                .get_or_create(&DecodeLabels { kind: kind.into() });
        }
    }

    /// Every metric with its exposed name and help text, one line each.
    fn register_all(&mut self) {
        register_table!(self, {
            account_requests => ("valence_account_requests", "Account requests seen"),
            accounts_initialized => ("valence_accounts_initialized", "Accounts initialized"),
            sessions_created => ("valence_sessions_created", "Sessions created"),
            sessions_consumed => ("valence_sessions_consumed", "Sessions consumed"),
            active_sessions => ("valence_active_sessions", "Live (non-consumed) sessions"),
            active_accounts => ("valence_active_accounts", "Active accounts"),
            rules_evaluated => ("valence_progression_rules_evaluated", "Rule evaluations"),
            rules_matched => ("valence_progression_rules_matched", "Rule matches"),
            rule_actions => ("valence_rule_actions", "Rule actions by kind and outcome"),
            rule_evaluation_duration => ("valence_rule_evaluation_duration_seconds", "Seconds to evaluate the rules one trigger (event batch or tick) affects"),
            account_initialization_duration => ("valence_account_initialization_duration_seconds", "Time from request to initialized account"),
            session_lifetime => ("valence_session_lifetime_seconds", "Session creation to consumption"),
            accounts_created => ("accounts_created", "Accounts created by this service"),
            accounts_failed => ("accounts_failed", "Account creations that failed"),
            event_processing_duration => ("event_processing_duration", "Seconds from a chain event's confirmation to its recording (PDAComputed: to its account verified), by event type; event_type=record for account records"),
            event_deadline_missed => ("event_deadline_missed", "Chain events recorded later than seed 001's maximum delay for their type"),
            session_anomalies => ("valence_session_anomalies", "Session factory events the session state machine did not allow (recorded, not applied)"),
            chain_gaps => ("valence_chain_gaps", "Truncated transactions of the shard program whose events could not all be recovered"),
            rpc_connection_status => ("rpc_connection_status", "1 when the Solana RPC answers"),
            service_uptime_seconds => ("service_uptime_seconds", "Seconds since the server started"),
            queue_size => ("queue_size", "Queue sizes: queue=builder, account requests waiting for the builder; queue=session_factory, sessions in the chain's queue"),
            wallet_balance_lamports => ("wallet_balance_lamports", "Service wallet balance"),
            builder_in_flight => ("valence_builder_in_flight", "Account creations talking to the chain now"),
            builder_in_flight_peak => ("valence_builder_in_flight_peak", "Most account creations in flight at once since start"),
            builder_attempts => ("valence_builder_attempts", "Builder attempts by outcome"),
            is_leader => ("valence_is_leader", "1 while this replica leads (runs the orchestrator; shards' chain work follows their leases)"),
            leader_since_seconds => ("valence_leader_since_seconds", "When this replica took the lead, Unix seconds (0 while following)"),
            grpc_requests => ("grpc_requests", "gRPC requests by method and status code"),
            grpc_request_duration => ("grpc_request_duration_seconds", "gRPC request latency by method"),
            http_requests => ("http_requests", "REST requests by route and status"),
            http_request_duration => ("http_request_duration_seconds", "REST request latency by route"),
            event_subscribers => ("lifecycle_event_subscribers", "Open event subscriptions"),
            gateway_streams => ("lifecycle_gateway_streams", "Open event streams on the REST gateway (SSE, WebSocket), also counted in lifecycle_event_subscribers"),
            gateway_streams_ended => ("lifecycle_gateway_streams_ended", "REST gateway event streams that ended, by kind and reason"),
            stream_tickets => ("lifecycle_stream_tickets", "Event stream tickets by outcome (issued, accepted, expired, refused)"),
            events_appended => ("lifecycle_events_appended", "Events appended to the log"),
            events_delivered => ("lifecycle_events_delivered", "Events delivered to subscribers"),
            subscriber_lag => ("lifecycle_subscriber_lag_sequences", "Head sequence minus delivered sequence at delivery"),
            subscriber_catch_ups => ("lifecycle_subscriber_catch_ups", "Subscribers switched to reading from the store"),
            events_pruned => ("lifecycle_events_pruned", "Events removed by retention"),
            chain_updates_received => ("chain_updates_received", "Chain updates received by the monitor, by source"),
            chain_updates_processed => ("chain_updates_processed", "Chain updates applied by the monitor, by source"),
            chain_decode_failures => ("chain_decode_failures", "Shard program data that did not decode, by kind"),
            chain_updates_unchanged => ("chain_updates_unchanged", "Chain updates skipped by the monitor because the account had not changed, by source"),
            monitor_fingerprints => ("monitor_fingerprints", "Accounts whose last applied data the monitor remembers (about 70 bytes each)"),
            reconciliation_duration => ("reconciliation_duration_seconds", "Reconciliation pass time, getProgramAccounts included"),
            reconciliation_cpu => ("reconciliation_cpu_seconds", "Process CPU seconds spent during reconciliation passes"),
            reconciliation_fetch_cpu => ("reconciliation_fetch_cpu_seconds", "Of the reconciliation CPU, the part spent receiving the getProgramAccounts answer"),
            reconciliation_accounts => ("reconciliation_accounts", "Accounts seen by the last reconciliation pass"),
            reconciliation_changed => ("reconciliation_changed", "Accounts the last reconciliation pass found changed"),
            chain_store_failures => ("chain_store_failures", "Chain records the store refused (retried at the next reconciliation)"),
            chain_strings_replaced => ("chain_strings_replaced", "On-chain strings stored with NUL characters replaced by U+FFFD"),
            last_processed_slot => ("last_processed_slot", "Highest slot the monitor applied"),
            shard_owned => ("valence_shard_owned", "1 for each shard program whose lease this replica holds (runs its monitor and builder), else 0"),
            shard_epoch => ("valence_shard_epoch", "Fencing epoch of each shard's lease; grows on every change of owner"),
            shard_last_slot => ("valence_shard_last_processed_slot", "Highest slot each shard's monitor applied, as its owner last reported"),
            shard_lag => ("valence_shard_lag_slots", "Chain slot minus the shard's last applied slot, as its owner last reported"),
            fenced_writes => ("valence_fenced_writes", "Writes of a shard's chain work refused because the shard's lease epoch had moved on (another replica owns it)"),
            lease_changes => ("valence_shard_lease_changes", "Shard lease changes on this replica: acquired, released (handed over) or lost"),
            shard_events => ("valence_shard_events", "Events appended by each shard's chain work"),
            live_replicas => ("valence_live_replicas", "Replicas with a fresh heartbeat, sharing the shards"),
            component_state => ("component_state", "Component state (ComponentState number)"),
            component_restarts => ("component_restarts", "Component restarts"),
            component_last_heartbeat => ("component_last_heartbeat_seconds", "When the component last reported a heartbeat, Unix seconds"),
            singleton_operations => ("valence_singleton_operations", "Singleton operations by singleton, operation and outcome"),
            singleton_status => ("valence_singleton_status", "Singleton status (SingletonStatus number: 1 uninitialized, 2 active, 3 paused, 4 error)"),
            connections_open => ("valence_connections_open", "Open client connections, by listener"),
            connections_refused => ("valence_connections_refused", "Connections refused at server.max_connections, by listener and reason: full (every connection had a request in flight; the new one was closed) or evicted (the connection waiting longest for a request was closed for the new one)"),
            connections_timed_out => ("valence_connections_timed_out", "Connections closed by the server, by listener and reason: header (no request head or HTTP/2 preface within server.header_read_timeout_secs) or idle (no request in flight for server.idle_timeout_secs)"),
        });
    }

    /// Sets a singleton's status gauge.
    pub fn set_singleton_status(&self, kind: &str, status: i32) {
        self.singleton_status
            .get_or_create(&SingletonLabels {
                kind: kind.to_string(),
            })
            .set(status.max(0) as u64);
    }

    /// Names shards in labels (program id to name), and makes each shard's
    /// series exist from the start, so dashboards and alerts see them.
    pub fn set_shard_names(&self, names: impl IntoIterator<Item = (String, String)>) {
        let mut map = self.shard_names.write().expect("shard names lock");
        for (id, name) in names {
            let label = ShardLabels {
                shard: name.clone(),
            };
            let _ = self.shard_owned.get_or_create(&label);
            let _ = self.shard_epoch.get_or_create(&label);
            let _ = self.shard_last_slot.get_or_create(&label);
            let _ = self.shard_lag.get_or_create(&label);
            let _ = self.fenced_writes.get_or_create(&label);
            let _ = self.shard_events.get_or_create(&label);
            for change in ["acquired", "released", "lost"] {
                let _ = self.lease_changes.get_or_create(&LeaseChangeLabels {
                    shard: name.clone(),
                    change: change.into(),
                });
            }
            map.insert(id, name);
        }
    }

    /// A shard's label: its name, or the id when it is not configured here.
    pub fn shard_label(&self, shard: &str) -> ShardLabels {
        let map = self.shard_names.read().expect("shard names lock");
        ShardLabels {
            shard: map.get(shard).cloned().unwrap_or_else(|| shard.to_string()),
        }
    }

    /// Counts an event of the log in the lifecycle counters it feeds.
    pub fn observe_event(&self, event: &LifecycleEvent) {
        self.events_appended.inc();
        if !event.shard.is_empty() {
            self.shard_events
                .get_or_create(&self.shard_label(&event.shard))
                .inc();
        }
        match &event.payload {
            Some(Payload::AccountRequested(_)) => {
                self.account_requests.inc();
            }
            Some(Payload::AccountInitialized(_)) => {
                self.accounts_initialized.inc();
                self.accounts_created.inc();
            }
            Some(Payload::AccountInitializationFailed(f)) if f.parked => {
                self.accounts_failed.inc();
            }
            Some(Payload::SessionCreated(_)) => {
                self.sessions_created.inc();
            }
            Some(Payload::SessionConsumed(_)) => {
                self.sessions_consumed.inc();
            }
            Some(Payload::RuleMatched(_)) => {
                self.rules_matched.inc();
            }
            Some(Payload::SingletonOperation(op)) => {
                let outcome = if op.error.is_empty() {
                    "success"
                } else {
                    "failure"
                };
                self.singleton_operations
                    .get_or_create(&SingletonOpLabels {
                        kind: op.singleton.clone(),
                        operation: op.operation.clone(),
                        outcome: outcome.into(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}
