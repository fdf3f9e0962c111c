//! Health and metrics of the singletons, from the store.

use valence_lifecycle_api::v1::{SingletonHealth, SingletonStatus};

use super::{kind::INIT_ORDER, Singletons};
use crate::{
    error::ApiResult,
    store::{timestamp, SingletonRow},
};

impl Singletons {
    /// Sets the status gauges from the store (before a metrics scrape).
    pub async fn refresh_gauges(&self) {
        match self.store.singletons().await {
            Ok(rows) => {
                for row in &rows {
                    let status = SingletonStatus::from(row.status) as i32;
                    self.metrics.set_singleton_status(&row.kind, status);
                }
                // Not stored yet: uninitialized, as /health says.
                for kind in INIT_ORDER {
                    if !rows.iter().any(|r| r.kind == kind.name()) {
                        self.metrics.set_singleton_status(
                            kind.name(),
                            SingletonStatus::Uninitialized as i32,
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh singleton gauges"),
        }
    }

    /// Per-singleton health for /health, from the store.
    pub async fn health_json(&self) -> ApiResult<Vec<serde_json::Value>> {
        let rows = self.store.singletons().await?;
        Ok(INIT_ORDER
            .iter()
            .map(|kind| {
                let row = rows.iter().find(|r| r.kind == kind.name());
                let h = row.map(health);
                serde_json::json!({
                    "name": kind.name(),
                    "status": row.map_or("uninitialized", |r| r.status.as_str()),
                    "version": row.map_or(0, |r| r.version),
                    "success_rate": h.as_ref().map_or(1.0, |h| h.success_rate),
                    "operations_total": h.as_ref().map_or(0, |h| h.operations_total),
                    "last_error": h.as_ref().map_or("", |h| h.last_error.as_str()),
                    "last_operation_at": h.as_ref().and_then(|h| h.last_operation_at.as_ref().map(valence_lifecycle_api::json::rfc3339)),
                })
            })
            .collect())
    }
}

/// Health of a stored singleton.
pub(super) fn health(row: &SingletonRow) -> SingletonHealth {
    let success_rate = if row.operations_total == 0 {
        1.0
    } else {
        (row.operations_total - row.failures_total.min(row.operations_total)) as f64
            / row.operations_total as f64
    };
    SingletonHealth {
        success_rate,
        last_error: row.last_error.clone(),
        last_operation_at: row.last_operation_at_ms.map(timestamp),
        operations_total: row.operations_total,
        failures_total: row.failures_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_rates_count_failures() {
        let mut row = SingletonRow {
            kind: "diff".into(),
            status: crate::store::SingletonState::Active,
            program_id: String::new(),
            version: 1,
            config_json: String::new(),
            updated_at_ms: 0,
            last_signature: String::new(),
            operations_total: 0,
            failures_total: 0,
            last_error: String::new(),
            last_operation_at_ms: None,
        };
        assert_eq!(health(&row).success_rate, 1.0);
        row.operations_total = 4;
        row.failures_total = 1;
        assert_eq!(health(&row).success_rate, 0.75);
    }
}
