//! Singleton administration state: one row per singleton (status, config,
//! version, health counters) and the config version history. Every
//! recorded operation appends its SingletonOperation event in the same
//! transaction.

use sqlx::{any::AnyRow, Row as _};
use valence_lifecycle_api::v1::{lifecycle_event::Payload, SingletonOperation};

use super::error::StoreResult;
use super::{
    now_ms,
    rows::{count, state, unsigned},
    NewEvent, SingletonState, Store, WriteTx,
};

/// A stored singleton.
#[derive(Debug, Clone, PartialEq)]
pub struct SingletonRow {
    /// processor, scheduler or diff.
    pub kind: String,
    /// uninitialized, active, paused or error.
    pub status: SingletonState,
    /// Base58 program id.
    pub program_id: String,
    /// Current config version (0 before initialization).
    pub version: u32,
    /// Current config as JSON (empty before initialization).
    pub config_json: String,
    /// When the status or config last changed, Unix ms.
    pub updated_at_ms: i64,
    /// Signature of the last confirmed operation.
    pub last_signature: String,
    /// Operations attempted.
    pub operations_total: u64,
    /// Operations that failed.
    pub failures_total: u64,
    /// Error of the last operation; empty when it succeeded.
    pub last_error: String,
    /// When the last operation ran, Unix ms.
    pub last_operation_at_ms: Option<i64>,
}

/// One entry of a singleton's config history.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigVersionRow {
    /// Version number (1 at initialization).
    pub version: u32,
    /// When it took effect, Unix ms.
    pub at_ms: i64,
    /// Transaction that applied it.
    pub signature: String,
    /// The config as JSON.
    pub config_json: String,
}

/// A confirmed operation to record.
#[derive(Debug, Clone)]
pub struct SingletonSuccess<'a> {
    /// Which singleton.
    pub kind: &'a str,
    /// initialize, pause, resume or update_config.
    pub operation: &'a str,
    /// Status after it.
    pub status: SingletonState,
    /// Program id.
    pub program_id: &'a str,
    /// Config version after it.
    pub version: u32,
    /// The config after it, when the operation set one (a new version).
    pub new_config_json: Option<&'a str>,
    /// Its transaction.
    pub signature: &'a str,
}

const COLUMNS: &str =
    "kind, status, program_id, version, config_json, updated_at, last_signature, \
                       operations_total, failures_total, last_error, last_operation_at";

fn decode(row: &AnyRow) -> StoreResult<SingletonRow> {
    Ok(SingletonRow {
        kind: row.try_get("kind")?,
        status: state(row, "status")?,
        program_id: row.try_get("program_id")?,
        version: count(row, "version")?,
        config_json: row.try_get("config_json")?,
        updated_at_ms: row.try_get("updated_at")?,
        last_signature: row.try_get("last_signature")?,
        operations_total: unsigned(row, "operations_total")?,
        failures_total: unsigned(row, "failures_total")?,
        last_error: row.try_get("last_error")?,
        last_operation_at_ms: row.try_get("last_operation_at")?,
    })
}

impl Store {
    /// Every stored singleton (those never touched have no row).
    pub async fn singletons(&self) -> StoreResult<Vec<SingletonRow>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM singletons ORDER BY kind"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// The config history of `kind`, oldest first.
    pub async fn singleton_history(&self, kind: &str) -> StoreResult<Vec<ConfigVersionRow>> {
        let rows = sqlx::query(
            "SELECT version, at, signature, config_json FROM singleton_config_versions \
             WHERE kind = $1 ORDER BY version",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ConfigVersionRow {
                    version: count(row, "version")?,
                    at_ms: row.try_get("at")?,
                    signature: row.try_get("signature")?,
                    config_json: row.try_get("config_json")?,
                })
            })
            .collect()
    }

    /// Makes sure `kind` has a row (uninitialized until an operation says otherwise).
    async fn ensure_singleton(
        &self,
        tx: &mut WriteTx<'_>,
        kind: &str,
        program_id: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO singletons (kind, status, program_id, updated_at) VALUES ($1, $4, $2, $3) \
             ON CONFLICT (kind) DO NOTHING",
        )
        .bind(kind)
        .bind(program_id)
        .bind(now_ms())
        .bind(SingletonState::Uninitialized.as_str())
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// Records a confirmed operation: status, version and config, a history
    /// entry when the config changed, the health counters, and the
    /// SingletonOperation event; one transaction. Returns the event's sequence.
    pub async fn record_singleton_success(&self, op: &SingletonSuccess<'_>) -> StoreResult<u64> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        self.ensure_singleton(&mut tx, op.kind, op.program_id)
            .await?;
        sqlx::query(
            "UPDATE singletons SET status = $2, program_id = $3, version = $4, \
             config_json = COALESCE($5, config_json), updated_at = $6, last_signature = $7, \
             operations_total = operations_total + 1, last_error = '', last_operation_at = $6 \
             WHERE kind = $1",
        )
        .bind(op.kind)
        .bind(op.status.as_str())
        .bind(op.program_id)
        .bind(i64::from(op.version))
        .bind(op.new_config_json)
        .bind(now)
        .bind(op.signature)
        .execute(tx.conn())
        .await?;
        if let Some(config) = op.new_config_json {
            sqlx::query(
                "INSERT INTO singleton_config_versions (kind, version, at, signature, config_json) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(op.kind)
            .bind(i64::from(op.version))
            .bind(now)
            .bind(op.signature)
            .bind(config)
            .execute(tx.conn())
            .await?;
        }
        let payload = Payload::SingletonOperation(SingletonOperation {
            singleton: op.kind.to_string(),
            operation: op.operation.to_string(),
            config_version: op.version,
            error: String::new(),
        });
        let sequence = self
            .append_event(
                &mut tx,
                NewEvent::new(op.kind, payload).on_chain(None, op.signature),
            )
            .await?;
        self.commit(tx).await?;
        Ok(sequence)
    }

    /// Records a failed operation: the health counters and last error, the
    /// status given (what chain state says, or `error`), and the
    /// SingletonOperation event carrying the error.
    pub async fn record_singleton_failure(
        &self,
        kind: &str,
        operation: &str,
        status: SingletonState,
        program_id: &str,
        error: &str,
    ) -> StoreResult<u64> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        self.ensure_singleton(&mut tx, kind, program_id).await?;
        sqlx::query(
            "UPDATE singletons SET status = $2, program_id = $3, operations_total = operations_total + 1, \
             failures_total = failures_total + 1, last_error = $4, last_operation_at = $5 \
             WHERE kind = $1",
        )
        .bind(kind)
        .bind(status.as_str())
        .bind(program_id)
        .bind(error)
        .bind(now)
        .execute(tx.conn())
        .await?;
        let row = sqlx::query("SELECT version FROM singletons WHERE kind = $1")
            .bind(kind)
            .fetch_one(tx.conn())
            .await?;
        let version = count(&row, "version")?;
        let payload = Payload::SingletonOperation(SingletonOperation {
            singleton: kind.to_string(),
            operation: operation.to_string(),
            config_version: version,
            error: error.to_string(),
        });
        let sequence = self
            .append_event(&mut tx, NewEvent::new(kind, payload))
            .await?;
        self.commit(tx).await?;
        Ok(sequence)
    }

    /// Aligns the stored status (and, for a singleton this store has never
    /// seen, version and config) with chain state. Appends no event: chain
    /// state did not change, our knowledge of it did. Returns whether
    /// anything changed.
    pub async fn sync_singleton(
        &self,
        kind: &str,
        status: SingletonState,
        program_id: &str,
        adopt: Option<(u32, &str)>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        self.ensure_singleton(&mut tx, kind, program_id).await?;
        let mut changed = sqlx::query(
            "UPDATE singletons SET status = $2, program_id = $3, updated_at = $4 \
             WHERE kind = $1 AND (status <> $2 OR program_id <> $3)",
        )
        .bind(kind)
        .bind(status.as_str())
        .bind(program_id)
        .bind(now_ms())
        .execute(tx.conn())
        .await?
        .rows_affected()
            > 0;
        if let Some((version, config)) = adopt {
            changed |= sqlx::query(
                "UPDATE singletons SET version = $2, config_json = $3 WHERE kind = $1 AND version = 0",
            )
            .bind(kind)
            .bind(i64::from(version))
            .bind(config)
            .execute(tx.conn())
            .await?
            .rows_affected()
                > 0;
        }
        self.commit(tx).await?;
        Ok(changed)
    }
}
