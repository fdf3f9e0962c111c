//! Progression rules. The definition is stored in seed 000's JSON shape, so
//! rows stay readable with any SQL client.

use sqlx::Row as _;
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{lifecycle_event::Payload, ProgressionRule, RuleChanged},
};

use super::error::{StoreError, StoreResult};
use super::{now_ms, timestamp, NewEvent, Store};

/// A rule as stored (same type as the API's).
pub type StoredRule = ProgressionRule;

const COLUMNS: &str = "id, definition, created_at, updated_at";

impl Store {
    /// Stores a new rule (validated by the caller) and appends RuleCreated.
    pub async fn create_rule(&self, rule: &ProgressionRule) -> StoreResult<ProgressionRule> {
        let definition = definition_json(rule)?;
        let now = now_ms();
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO progression_rules (id, name, definition, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&rule.id)
        .bind(&rule.name)
        .bind(definition)
        .bind(rule.enabled)
        .bind(now)
        .execute(tx.conn())
        .await;
        if let Err(sqlx::Error::Database(db)) = &inserted {
            if db.is_unique_violation() {
                return Err(StoreError::AlreadyExists {
                    kind: "rule",
                    id: rule.id.clone(),
                });
            }
        }
        inserted?;
        let stored = ProgressionRule {
            created_at: Some(timestamp(now)),
            updated_at: Some(timestamp(now)),
            ..rule.clone()
        };
        let event = rule_event(&stored, Payload::RuleCreated);
        self.append_event(&mut tx, event).await?;
        self.commit(tx).await?;
        Ok(stored)
    }

    /// One rule.
    pub async fn get_rule(&self, id: &str) -> StoreResult<ProgressionRule> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM progression_rules WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("rule", id))?;
        decode_rule(&row)
    }

    /// Rules ordered by id (the primary key): at most `limit`, those whose
    /// id follows `after` when given.
    pub async fn list_rules(
        &self,
        enabled_only: bool,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ProgressionRule>> {
        let mut clauses = Vec::new();
        if enabled_only {
            clauses.push("enabled = $2".to_string());
        }
        if after.is_some() {
            clauses.push(format!("id > ${}", 2 + usize::from(enabled_only)));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!("SELECT {COLUMNS} FROM progression_rules {filter} ORDER BY id LIMIT $1");
        let mut query = sqlx::query(&sql).bind(i64::from(limit));
        if enabled_only {
            query = query.bind(true);
        }
        if let Some(id) = after {
            query = query.bind(id.to_string());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(decode_rule).collect()
    }

    /// Replaces name, condition, action and enabled; appends RuleUpdated.
    pub async fn update_rule(&self, rule: &ProgressionRule) -> StoreResult<ProgressionRule> {
        self.rewrite_rule(&rule.id, Payload::RuleUpdated, |stored| ProgressionRule {
            created_at: stored.created_at,
            updated_at: stored.updated_at,
            ..rule.clone()
        })
        .await
    }

    /// Sets the enabled flag; appends RuleEnabled or RuleDisabled.
    pub async fn set_rule_enabled(&self, id: &str, enabled: bool) -> StoreResult<ProgressionRule> {
        let change = if enabled {
            Payload::RuleEnabled
        } else {
            Payload::RuleDisabled
        };
        self.rewrite_rule(id, change, |stored| ProgressionRule { enabled, ..stored })
            .await
    }

    /// Deletes a rule; appends RuleDeleted.
    pub async fn delete_rule(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM progression_rules WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| StoreError::not_found("rule", id))?;
        let stored = decode_rule(&row)?;
        sqlx::query("DELETE FROM progression_rules WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        self.append_event(&mut tx, rule_event(&stored, Payload::RuleDeleted))
            .await?;
        self.commit(tx).await
    }

    /// Reads the rule, applies `change`, writes it back and appends the event.
    async fn rewrite_rule(
        &self,
        id: &str,
        payload: fn(RuleChanged) -> Payload,
        change: impl FnOnce(ProgressionRule) -> ProgressionRule,
    ) -> StoreResult<ProgressionRule> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM progression_rules WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| StoreError::not_found("rule", id))?;
        let now = now_ms();
        let mut updated = change(decode_rule(&row)?);
        updated.updated_at = Some(timestamp(now));
        sqlx::query("UPDATE progression_rules SET name = $1, definition = $2, enabled = $3, updated_at = $4 WHERE id = $5")
            .bind(&updated.name)
            .bind(definition_json(&updated)?)
            .bind(updated.enabled)
            .bind(now)
            .bind(id)
            .execute(tx.conn())
            .await?;
        self.append_event(&mut tx, rule_event(&updated, payload))
            .await?;
        self.commit(tx).await?;
        Ok(updated)
    }
}

fn rule_event(rule: &ProgressionRule, payload: fn(RuleChanged) -> Payload) -> NewEvent {
    NewEvent::new(
        &rule.id,
        payload(RuleChanged {
            rule: Some(rule.clone()),
        }),
    )
}

pub(super) fn definition_json(rule: &ProgressionRule) -> StoreResult<String> {
    let seed = SeedRule::try_from(rule).map_err(|missing| StoreError::Invalid {
        field: format!("rule.{}", missing.0),
        message: "must be set".into(),
    })?;
    serde_json::to_string(&seed).map_err(|e| StoreError::Other(e.into()))
}

pub(super) fn decode_rule(row: &sqlx::any::AnyRow) -> StoreResult<ProgressionRule> {
    let id: String = row.try_get("id")?;
    let definition: String = row.try_get("definition")?;
    let seed: SeedRule = serde_json::from_str(&definition)
        .map_err(|e| anyhow::anyhow!("stored rule {id} does not parse: {e}"))?;
    let mut rule = ProgressionRule::from(seed);
    rule.created_at = Some(timestamp(row.try_get("created_at")?));
    rule.updated_at = Some(timestamp(row.try_get("updated_at")?));
    Ok(rule)
}
