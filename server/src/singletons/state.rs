//! Chain state is the truth: reading each singleton's SingletonState
//! account, and the SingletonInfo built from it and the stored row.

use valence_lifecycle_api::v1::{
    SingletonConfigVersion, SingletonHealth, SingletonInfo, SingletonStatus,
};

use super::{health::health, kind::INIT_ORDER, Kind, SingletonConfig, Singletons};
use crate::{
    chain::codec::{Record, SingletonStateRecord},
    error::{ApiError, ApiResult},
    store::{timestamp, SingletonRow, SingletonState},
};

/// A singleton's SingletonState account as read from chain.
#[derive(Debug, Clone)]
pub(super) enum ChainState {
    /// Not created: not initialized.
    Missing,
    /// A valid record.
    Present(SingletonStateRecord),
    /// Something else is at the address.
    Invalid(String),
}

impl ChainState {
    pub(super) fn status(&self) -> SingletonStatus {
        match self {
            ChainState::Missing => SingletonStatus::Uninitialized,
            ChainState::Present(r) if r.status == 1 => SingletonStatus::Active,
            ChainState::Present(r) if r.status == 2 => SingletonStatus::Paused,
            _ => SingletonStatus::Error,
        }
    }
}

impl Singletons {
    /// Reads `kind`'s state account.
    pub(super) async fn read_state(&self, kind: Kind) -> ApiResult<ChainState> {
        let chain = self.chain()?;
        let program = self.program_or_fail(kind)?;
        let key = self.state_key(kind)?;
        let account = chain.account(&key).await.map_err(|e| {
            tracing::warn!(singleton = %kind, error = format!("{e:#}"), "reading singleton state failed");
            ApiError::Unavailable(format!("reading the {kind} state account failed; retry later"))
        })?;
        let Some(account) = account else {
            return Ok(ChainState::Missing);
        };
        if account.owner != program {
            return Ok(ChainState::Invalid(format!(
                "{key} is owned by {}, not the {kind} program",
                account.owner
            )));
        }
        Ok(match Record::decode(&account.data) {
            Ok(Record::SingletonState(r)) if r.kind == kind.code() => ChainState::Present(r),
            Ok(Record::SingletonState(r)) => {
                ChainState::Invalid(format!("{key} holds the state of kind {}", r.kind))
            }
            Ok(other) => ChainState::Invalid(format!("{key} holds a {} record", other.name())),
            Err(_) if account.data.iter().take(8).all(|b| *b == 0) => ChainState::Missing,
            Err(e) => ChainState::Invalid(format!("{key} does not decode: {e}")),
        })
    }

    /// Reads `kind`'s chain state and aligns the store with it.
    pub(super) async fn observe(&self, kind: Kind) -> ApiResult<ChainState> {
        let state = self.read_state(kind).await?;
        let program = self.program_or_fail(kind)?.to_string();
        let adopted = match &state {
            ChainState::Present(r) => SingletonConfig::decode(kind, &r.config)
                .ok()
                .map(|c| (r.version, c.to_json())),
            _ => None,
        };
        let status = match &state {
            // No account and a failed last operation: keep "error" (the
            // last operation's outcome is all there is to go on).
            ChainState::Missing => None,
            s => Some(SingletonState::from(s.status())),
        };
        if let Some(status) = status {
            self.store
                .sync_singleton(
                    kind.name(),
                    status,
                    &program,
                    adopted.as_ref().map(|(v, c)| (*v, c.as_str())),
                )
                .await?;
        }
        Ok(state)
    }

    /// Everything known about every singleton, in initialization order.
    /// Chain state is read when a chain is there; if it does not answer,
    /// the stored state is shown.
    pub async fn get(&self) -> ApiResult<Vec<SingletonInfo>> {
        if self.chain.is_some() && self.authority().is_ok() {
            let _turn = self.turn.lock().await;
            for kind in INIT_ORDER {
                if self.program(kind).is_none() {
                    continue;
                }
                if let Err(e) = self.observe(kind).await {
                    tracing::warn!(singleton = %kind, error = %e, "showing stored singleton state");
                }
            }
        }
        self.infos(&INIT_ORDER).await
    }

    /// Infos of `kinds`, in that order, from the store.
    pub(super) async fn infos(&self, kinds: &[Kind]) -> ApiResult<Vec<SingletonInfo>> {
        let rows = self.store.singletons().await?;
        let mut out = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let row = rows.iter().find(|r| r.kind == kind.name());
            let history = self.store.singleton_history(kind.name()).await?;
            let info = self.info(*kind, row, history);
            self.metrics.set_singleton_status(kind.name(), info.status);
            out.push(info);
        }
        Ok(out)
    }

    pub(super) fn info(
        &self,
        kind: Kind,
        row: Option<&SingletonRow>,
        history: Vec<crate::store::ConfigVersionRow>,
    ) -> SingletonInfo {
        let program_id = self.program(kind).map(|p| p.to_string());
        let Some(row) = row else {
            return SingletonInfo {
                kind: kind.proto() as i32,
                status: SingletonStatus::Uninitialized as i32,
                program_id: program_id.unwrap_or_default(),
                health: Some(SingletonHealth {
                    success_rate: 1.0,
                    ..Default::default()
                }),
                ..Default::default()
            };
        };
        SingletonInfo {
            kind: kind.proto() as i32,
            status: SingletonStatus::from(row.status) as i32,
            program_id: program_id.unwrap_or_else(|| row.program_id.clone()),
            version: row.version,
            updated_at: Some(timestamp(row.updated_at_ms)),
            config: SingletonConfig::from_json(kind, &row.config_json)
                .ok()
                .map(|c| c.proto()),
            history: history
                .into_iter()
                .map(|h| SingletonConfigVersion {
                    version: h.version,
                    at: Some(timestamp(h.at_ms)),
                    signature: h.signature,
                    config_json: h.config_json,
                })
                .collect(),
            health: Some(health(row)),
        }
    }
}
