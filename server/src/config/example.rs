//! `server/deploy/config.example.toml`: every key of the config file with
//! its default and its environment variables, commented. The keys and the
//! defaults come from serializing `Config::default()`, the same serializer
//! `--dump-config` uses, so a key added to a section without a line in
//! [`KEYS`] fails the test below, and a stale line fails it too.
//!
//! Regenerate after changing a key or a default:
//!   cargo run -q -- --print-example-config > server/deploy/config.example.toml
//! (or run the test with `VALENCE_WRITE_EXAMPLE_CONFIG=1`, which rewrites it).

use std::fmt::Write as _;

use anyhow::{bail, Context as _};

use super::{env, Config, ENV_PREFIX};

/// A section's name and what it holds.
const SECTIONS: &[(&str, &str)] = &[
    ("server", "Listeners and request limits."),
    (
        "tls",
        "TLS on the gRPC and REST listeners (rustls); re-read on SIGHUP.",
    ),
    ("database", "Where state lives."),
    ("rpc", "The Solana cluster (seed 001 [rpc])."),
    ("service", "The account builder (seed 001 [service])."),
    (
        "retry",
        "Backoff with jitter for chain operations and builder attempts (seed 001 [retry]).",
    ),
    (
        "monitoring",
        "Health checks and Prometheus (seed 001 [monitoring]).",
    ),
    (
        "lifecycle",
        "Seed 000's behaviour switches: the shard program, reconciliation, rules.",
    ),
    ("events", "The event log's retention and its subscribers."),
    ("auth", "Bearer tokens and roles (reader, operator, admin)."),
    ("telemetry", "Logs and traces."),
    (
        "singletons",
        "The processor, scheduler and diff programs (seed 002).",
    ),
    (
        "supervision",
        "Heartbeats and restarts of components (seeds 003 and 004).",
    ),
    (
        "leader",
        "Leader election among replicas sharing one PostgreSQL.",
    ),
    (
        "leases",
        "How replicas sharing one PostgreSQL split the shards' chain work (fenced leases).",
    ),
];

/// A key (`section.name`), its meaning, and for a key with no default
/// value (an option) an example value.
struct Key {
    key: &'static str,
    doc: &'static str,
    unset_example: Option<&'static str>,
}

const fn key(key: &'static str, doc: &'static str) -> Key {
    Key {
        key,
        doc,
        unset_example: None,
    }
}

/// Every key, in file order within its section.
const KEYS: &[Key] = &[
    key("server.bind_address", "Address both listeners bind to; anything but loopback needs [[auth.tokens]], and [tls] to keep them secret."),
    key("server.grpc_port", "gRPC port."),
    key("server.api_port", "REST gateway port (also serves /metrics and /health)."),
    key("server.request_timeout_secs", "Per unary call and REST request."),
    key("server.max_concurrent_requests", "Requests served at once per listener; more wait."),
    key("server.max_message_bytes", "Largest request message or body, in bytes."),
    key("server.shutdown_grace_secs", "Drain time of each component on SIGINT/SIGTERM."),
    key("server.max_connections", "Open connections per listener; at the cap the longest-idle one is closed for a new one."),
    key("server.header_read_timeout_secs", "To send a request head (REST) or the HTTP/2 preface (gRPC)."),
    key("server.idle_timeout_secs", "A connection with no request in flight is closed after this."),
    key("tls.cert_path", "PEM certificate chain, leaf first; empty: plaintext listeners (bearer tokens then cross the network in the clear)."),
    key("tls.key_path", "PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate."),
    key("tls.client_ca_path", "PEM CA certificates; set: gRPC clients must present a certificate they signed (mTLS)."),
    key("database.url", "sqlite://path (one server process per file) or postgres://… (any number of replicas)."),
    key("database.max_connections", "Pool size."),
    key("database.acquire_timeout_secs", "How long a caller waits for a pooled connection."),
    key("rpc.url", "Solana JSON-RPC URL; empty: the embedded local network."),
    key("rpc.ws_url", "Websocket URL; empty: derived from rpc.url."),
    key("rpc.commitment", "processed, confirmed or finalized."),
    key("rpc.timeout_secs", "Timeout of each RPC call."),
    key("rpc.embedded", "With rpc.url empty: start the embedded network (false: no chain, API and event log only)."),
    key("service.max_concurrent_creations", "Builder: account creations in flight at once."),
    key("service.keypair_path", "Service wallet, a Solana CLI keypair file; empty on the embedded network."),
    key("service.min_wallet_balance_lamports", "Below it the chain-wallet health check is degraded."),
    key("service.initialize_accounts", "Send the shard program's initialize_account with each new account."),
    key("retry.max_retries", "Attempts per operation."),
    key("retry.initial_delay_ms", "First delay."),
    key("retry.max_delay_ms", "Largest delay."),
    key("retry.multiplier", "Growth of the delay per attempt."),
    key("monitoring.health_check_interval_secs", "Seconds between background health checks."),
    Key {
        key: "monitoring.metrics_port",
        doc: "Also serve /metrics alone on this port; unset by default.",
        unset_example: Some("9400"),
    },
    key("monitoring.enable_prometheus", "Serve /metrics."),
    key("monitoring.console", "Serve the operator console (a browser UI over the REST gateway) at /console."),
    key("monitoring.explorer_url", "Where the console links a transaction; {signature} is replaced by its signature (empty: no links)."),
    key("lifecycle.shard_program_id", "Shard program (base58); required with rpc.url, empty: the stand-in on the embedded network."),
    key("lifecycle.shard_program_ids", "Several shard programs, comma-separated, each <id> or <name>=<id>; wins over shards and shard_program_id."),
    key("lifecycle.shards", "Several shard programs as [[lifecycle.shards]] tables (below); win over shard_program_id."),
    key("lifecycle.poll_interval_secs", "Reconciliation interval."),
    key("lifecycle.live_poll_interval_secs", "Reconciliation interval while both websocket feeds are healthy (at least poll_interval_secs)."),
    key("lifecycle.max_accounts_per_session", "Largest session; also bounds rule template indices."),
    key("lifecycle.consumption_timeout_secs", "A pending consumption expires after this."),
    key("lifecycle.auto_progress", "Execute rule actions (false: only report matches)."),
    key("lifecycle.rule_tick_secs", "How often time-based rule conditions are evaluated."),
    key("lifecycle.webhook_secret", "HMAC-SHA256 key of webhook signatures; empty: unsigned. A secret."),
    key("lifecycle.webhook_timeout_secs", "One webhook POST."),
    key("events.retention_max_age_secs", "Prune events older than this (0: keep by age)."),
    key("events.retention_max_count", "Keep at most this many events (0: keep by count)."),
    key("events.prune_interval_secs", "Seconds between pruning passes."),
    key("events.live_buffer", "Events held in the shared live buffer."),
    key("events.subscriber_buffer", "Messages buffered per subscriber before it is served from the store."),
    key("events.catch_up_page", "Events read from the store per catch-up query."),
    key("events.max_subscribers", "Largest number of concurrent subscriptions."),
    key("auth.tokens", "Tokens and their roles, as [[auth.tokens]] tables (below); none: every caller has every role, loopback only."),
    key("auth.allow_anonymous_reads", "Let callers without a token read."),
    key("auth.stream_ticket_secs", "Seconds a stream ticket (POST /events/tickets, for browsers' EventSource) opens /events/stream and /events/ws (1 to 3600)."),
    key("telemetry.log_filter", "tracing filter (RUST_LOG syntax)."),
    key("telemetry.log_format", "plain or json."),
    key("telemetry.otlp_endpoint", "OTLP/gRPC endpoint for traces; empty: no export."),
    key("telemetry.service_name", "service.name of exported traces."),
    key("singletons.processor_program_id", "Processor program (base58); empty: the stand-in on the embedded network."),
    key("singletons.scheduler_program_id", "Scheduler program (base58); empty: the stand-in on the embedded network."),
    key("singletons.diff_program_id", "Diff program (base58); empty: the stand-in on the embedded network."),
    key("singletons.authority_keypair_path", "Singleton authority, a Solana CLI keypair file; empty: the service wallet."),
    key("supervision.heartbeat_interval_ms", "How often a component reports that it is alive."),
    key("supervision.heartbeat_timeout_ms", "Silence after which a component is restarted."),
    key("supervision.max_restarts", "Restarts in a row before a component stays in error."),
    key("supervision.restart_initial_delay_ms", "Delay before the first restart."),
    key("supervision.restart_max_delay_ms", "Largest delay between restarts."),
    key("supervision.restart_multiplier", "Growth of the delay per restart."),
    key("supervision.restart_jitter", "Random spread of each delay, as a fraction (0.1 = ±10%)."),
    key("leader.replica_id", "This replica's name; empty: <hostname>-<pid>."),
    key("leader.retry_interval_ms", "How often a follower tries to take the lead."),
    key("leader.check_interval_ms", "How often the leader checks its lock connection."),
    key("leases.ttl_ms", "How long a shard lease lasts unless renewed; a silent replica counts as live this long."),
    key("leases.renew_interval_ms", "How often a replica renews its leases and rebalances; well under ttl_ms."),
    key("leases.rebalance", "Hand shards over when a replica joins; false: only free or expired shards move."),
];

/// The commented example config (`--print-example-config`).
pub fn example_toml() -> anyhow::Result<String> {
    let defaults = toml::Value::try_from(Config::default()).context("serializing the defaults")?;
    let Some(defaults) = defaults.as_table() else {
        bail!("the config does not serialize to a table");
    };
    let mut out = String::from(
        "# Valence Lifecycle Manager: every configuration key, its default and its\n\
         # environment variables. Generated by `valence-lifecycle --print-example-config`\n\
         # from the same defaults `--dump-config` prints; a test keeps this file equal\n\
         # to that output. Layers: defaults, then this file (config.toml, or --config\n\
         # FILE), then the environment, then flags. Uncomment a key to change it.\n",
    );
    for (name, doc) in SECTIONS {
        let Some(section) = defaults.get(*name).and_then(toml::Value::as_table) else {
            bail!("section [{name}] is documented but not in Config");
        };
        if let Some(undocumented) = section
            .keys()
            .find(|k| !KEYS.iter().any(|d| d.key == format!("{name}.{k}")))
        {
            bail!("{name}.{undocumented} has no line in config/example.rs KEYS");
        }
        write!(out, "\n# {doc}\n[{name}]\n")?;
        for doc in KEYS
            .iter()
            .filter(|d| d.key.split('.').next() == Some(name))
        {
            let field = &doc.key[name.len() + 1..];
            write!(out, "\n# {}\n# Environment: ", doc.doc)?;
            if let Some(seed) = env::seed_name(doc.key) {
                write!(out, "{seed} or ")?;
            }
            writeln!(
                out,
                "{ENV_PREFIX}{}__{}.",
                name.to_uppercase(),
                field.to_uppercase()
            )?;
            match (section.get(field), doc.unset_example) {
                (Some(value), _) => writeln!(out, "#{field} = {value}")?,
                (None, Some(example)) => writeln!(out, "#{field} = {example}")?,
                (None, None) => bail!("{} is documented but not in Config", doc.key),
            }
        }
        if *name == "lifecycle" {
            out.push_str(
                "\n# One table per shard program: its id (base58) and a short name for metrics,\n\
                 # logs and filters (letters, digits, '-', '_', '.'; empty: the id).\n\
                 # [[lifecycle.shards]]\n\
                 # id = \"<base58 program id>\"\n\
                 # name = \"alpha\"\n",
            );
        }
        if *name == "auth" {
            out.push_str(
                "\n# One table per token; roles: reader, operator, admin. `token` is the secret\n\
                 # (at least 16 characters) or where it is: \"sha256:<64 hex>\" (its digest, so\n\
                 # this file holds no plaintext), \"file:<path>\" (re-read on SIGHUP) or\n\
                 # \"env:<VARIABLE>\".\n\
                 # [[auth.tokens]]\n\
                 # token = \"file:/etc/valence-lifecycle/tokens/grafana\"\n\
                 # role = \"reader\"\n\
                 # name = \"grafana\"\n",
            );
        }
    }
    if let Some(extra) = defaults
        .keys()
        .find(|k| !SECTIONS.iter().any(|(s, _)| s == k))
    {
        bail!("section [{extra}] has no line in config/example.rs SECTIONS");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");

    #[test]
    fn the_committed_example_config_is_the_generated_one() {
        let generated = example_toml().unwrap();
        if std::env::var_os("VALENCE_WRITE_EXAMPLE_CONFIG").is_some() {
            std::fs::write(COMMITTED, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap();
        assert!(
            committed == generated,
            "server/deploy/config.example.toml is stale: regenerate it with \
             `cargo run -q -- --print-example-config > server/deploy/config.example.toml` \
             (or VALENCE_WRITE_EXAMPLE_CONFIG=1 cargo test -p valence-lifecycle-server --lib example)"
        );
    }

    #[test]
    fn the_example_uncommented_is_the_defaults() {
        // Every key line uncommented: the keys exist (deny_unknown_fields)
        // and the values are the defaults, except the unset option.
        let text: String = example_toml()
            .unwrap()
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.starts_with([' ', '[']) && rest.contains(" = ") => rest,
                _ if l.starts_with("#") => "",
                _ => l,
            })
            .fold(String::new(), |acc, l| acc + l + "\n");
        let mut parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed.monitoring.metrics_port, Some(9400));
        parsed.monitoring.metrics_port = None;
        assert_eq!(parsed, Config::default());
        // Each documented key appears once.
        for doc in KEYS {
            let field = doc.key.split_once('.').unwrap().1;
            assert!(text.contains(&format!("\n{field} = ")), "{}", doc.key);
        }
    }
}
