//! [`Config::validate`]: the checks types alone cannot express; each
//! error names the key (and the environment variable, where there is one)
//! and the value.

use anyhow::bail;

use super::Config;

impl Config {
    /// Checks values that types alone cannot; errors name key and value.
    pub fn validate(&self) -> anyhow::Result<()> {
        let s = &self.server;
        check(
            s.request_timeout_secs > 0,
            "server.request_timeout_secs",
            &s.request_timeout_secs,
        )?;
        check(
            s.max_concurrent_requests > 0,
            "server.max_concurrent_requests",
            &s.max_concurrent_requests,
        )?;
        check(
            s.max_message_bytes >= 1024,
            "server.max_message_bytes",
            &s.max_message_bytes,
        )?;
        check(
            s.max_connections > 0,
            "server.max_connections",
            &s.max_connections,
        )?;
        check(
            s.header_read_timeout_secs > 0,
            "server.header_read_timeout_secs",
            &s.header_read_timeout_secs,
        )?;
        check(
            (1..=3600).contains(&self.auth.stream_ticket_secs),
            "auth.stream_ticket_secs",
            &self.auth.stream_ticket_secs,
        )?;
        check(
            s.idle_timeout_secs > 0,
            "server.idle_timeout_secs",
            &s.idle_timeout_secs,
        )?;
        let db = &self.database.url;
        check(
            db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"),
            "database.url (DATABASE_URL)",
            db,
        )?;
        check(
            self.database.max_connections > 0,
            "database.max_connections",
            &self.database.max_connections,
        )?;
        check(
            ["processed", "confirmed", "finalized"].contains(&self.rpc.commitment.as_str()),
            "rpc.commitment",
            &self.rpc.commitment,
        )?;
        check(
            self.rpc.url.is_empty()
                || self.rpc.url.starts_with("http://")
                || self.rpc.url.starts_with("https://"),
            "rpc.url (RPC_URL)",
            &self.rpc.url,
        )?;
        check(
            self.rpc.ws_url.is_empty()
                || self.rpc.ws_url.starts_with("ws://")
                || self.rpc.ws_url.starts_with("wss://"),
            "rpc.ws_url (WS_URL)",
            &self.rpc.ws_url,
        )?;
        check(
            self.rpc.timeout_secs > 0,
            "rpc.timeout_secs",
            &self.rpc.timeout_secs,
        )?;
        self.validate_lifecycle()?;
        self.validate_rest()
    }

    fn validate_lifecycle(&self) -> anyhow::Result<()> {
        let sg = &self.singletons;
        for (key, value) in [
            (
                "singletons.processor_program_id (PROCESSOR_PROGRAM_ID)",
                &sg.processor_program_id,
            ),
            (
                "singletons.scheduler_program_id (SCHEDULER_PROGRAM_ID)",
                &sg.scheduler_program_id,
            ),
            (
                "singletons.diff_program_id (DIFF_PROGRAM_ID)",
                &sg.diff_program_id,
            ),
        ] {
            if !value.is_empty() {
                crate::validate::pubkey(key, value).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        self.shard_list()?;
        let l = &self.lifecycle;
        if !l.shard_program_id.is_empty() {
            crate::validate::pubkey(
                "lifecycle.shard_program_id (SHARD_PROGRAM_ID)",
                &l.shard_program_id,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        check(
            l.poll_interval_secs > 0,
            "lifecycle.poll_interval_secs (POLL_INTERVAL)",
            &l.poll_interval_secs,
        )?;
        check(
            l.live_poll_interval_secs >= l.poll_interval_secs,
            "lifecycle.live_poll_interval_secs (LIVE_POLL_INTERVAL, at least POLL_INTERVAL)",
            &l.live_poll_interval_secs,
        )?;
        check(
            (1..=64).contains(&l.max_accounts_per_session),
            "lifecycle.max_accounts_per_session (MAX_ACCOUNTS_PER_SESSION)",
            &l.max_accounts_per_session,
        )?;
        check(
            l.consumption_timeout_secs > 0,
            "lifecycle.consumption_timeout_secs (CONSUMPTION_TIMEOUT)",
            &l.consumption_timeout_secs,
        )?;
        check(
            (1..=3600).contains(&l.rule_tick_secs),
            "lifecycle.rule_tick_secs",
            &l.rule_tick_secs,
        )?;
        check(
            (1..=300).contains(&l.webhook_timeout_secs),
            "lifecycle.webhook_timeout_secs (WEBHOOK_TIMEOUT)",
            &l.webhook_timeout_secs,
        )
    }

    fn validate_supervision(&self) -> anyhow::Result<()> {
        let v = &self.supervision;
        check(
            v.heartbeat_interval_ms > 0,
            "supervision.heartbeat_interval_ms",
            &v.heartbeat_interval_ms,
        )?;
        check(
            v.heartbeat_timeout_ms > v.heartbeat_interval_ms,
            "supervision.heartbeat_timeout_ms (must exceed heartbeat_interval_ms)",
            &v.heartbeat_timeout_ms,
        )?;
        check(
            v.restart_initial_delay_ms > 0,
            "supervision.restart_initial_delay_ms",
            &v.restart_initial_delay_ms,
        )?;
        check(
            v.restart_max_delay_ms >= v.restart_initial_delay_ms,
            "supervision.restart_max_delay_ms",
            &v.restart_max_delay_ms,
        )?;
        check(
            v.restart_multiplier >= 1.0,
            "supervision.restart_multiplier",
            &v.restart_multiplier,
        )?;
        check(
            (0.0..1.0).contains(&v.restart_jitter),
            "supervision.restart_jitter",
            &v.restart_jitter,
        )?;
        let leases = &self.leases;
        check(
            leases.ttl_ms >= 1_000,
            "leases.ttl_ms (LEASE_TTL_MS, at least 1000)",
            &leases.ttl_ms,
        )?;
        check(
            leases.renew_interval_ms >= 50 && leases.renew_interval_ms * 2 <= leases.ttl_ms,
            "leases.renew_interval_ms (LEASE_RENEW_INTERVAL_MS, 50 to half of leases.ttl_ms)",
            &leases.renew_interval_ms,
        )?;
        let l = &self.leader;
        check(
            l.retry_interval_ms > 0,
            "leader.retry_interval_ms",
            &l.retry_interval_ms,
        )?;
        check(
            l.check_interval_ms > 0,
            "leader.check_interval_ms",
            &l.check_interval_ms,
        )
    }

    fn validate_rest(&self) -> anyhow::Result<()> {
        self.validate_supervision()?;
        let r = &self.retry;
        check(r.max_retries > 0, "retry.max_retries", &r.max_retries)?;
        check(
            r.initial_delay_ms > 0,
            "retry.initial_delay_ms",
            &r.initial_delay_ms,
        )?;
        check(
            r.max_delay_ms >= r.initial_delay_ms,
            "retry.max_delay_ms",
            &r.max_delay_ms,
        )?;
        check(r.multiplier >= 1.0, "retry.multiplier", &r.multiplier)?;
        check(
            self.service.max_concurrent_creations > 0,
            "service.max_concurrent_creations",
            &self.service.max_concurrent_creations,
        )?;
        check(
            self.monitoring.health_check_interval_secs > 0,
            "monitoring.health_check_interval_secs",
            &self.monitoring.health_check_interval_secs,
        )?;
        let e = &self.events;
        check(e.live_buffer >= 16, "events.live_buffer", &e.live_buffer)?;
        check(
            e.subscriber_buffer >= 1,
            "events.subscriber_buffer",
            &e.subscriber_buffer,
        )?;
        check(
            (1..=10_000).contains(&e.catch_up_page),
            "events.catch_up_page",
            &e.catch_up_page,
        )?;
        check(
            e.prune_interval_secs > 0,
            "events.prune_interval_secs",
            &e.prune_interval_secs,
        )?;
        check(
            e.max_subscribers > 0,
            "events.max_subscribers",
            &e.max_subscribers,
        )?;
        check(
            ["plain", "json"].contains(&self.telemetry.log_format.as_str()),
            "telemetry.log_format (LOG_FORMAT)",
            &self.telemetry.log_format,
        )?;
        let tls = &self.tls;
        if tls.key_path.is_empty() != tls.cert_path.is_empty()
            || (!tls.client_ca_path.is_empty() && tls.cert_path.is_empty())
        {
            bail!(
                "invalid [tls]: tls.cert_path (TLS_CERT_PATH) and tls.key_path (TLS_KEY_PATH) go together, \
                 and tls.client_ca_path (TLS_CLIENT_CA_PATH) needs both"
            );
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if let Err(e) = t.digest() {
                bail!("invalid auth.tokens[{i}].token: {e:#}");
            }
        }
        Ok(())
    }
}

fn check(ok: bool, key: &str, value: &dyn std::fmt::Display) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        bail!(
            "invalid value {value:?} for {key}",
            value = value.to_string()
        )
    }
}
