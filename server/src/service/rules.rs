//! Progression rules: management and dry-run evaluation.

use std::sync::Arc;

use valence_lifecycle_api::v1::{evaluate_rule_request::Target, ProgressionRule, RuleMatch};

use super::{
    paging::{Listing, PageRequest},
    Page, PageParams,
};
use crate::{
    error::{ApiError, ApiResult},
    orchestrator::{self, conditions::describe, engine::CompiledRule, rules::validate_rule},
    store::now_ms,
    validate, AppState,
};

/// Longest rule id.
const MAX_RULE_ID: usize = 128;

/// What a dry run found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    /// The live sessions the rule matches now (at most the limit asked for).
    pub matches: Vec<RuleMatch>,
    /// How many sessions were examined.
    pub sessions_evaluated: u64,
}

/// Checks a rule sent by a client (`rule` names the field when missing).
fn checked(state: &AppState, rule: Option<ProgressionRule>) -> ApiResult<ProgressionRule> {
    let rule = rule.ok_or_else(|| ApiError::invalid("rule", "must be set"))?;
    validate_rule(&rule, state.config.lifecycle.max_accounts_per_session)?;
    Ok(rule)
}

/// Validates and stores a new rule.
pub(crate) async fn create(
    state: &AppState,
    rule: Option<ProgressionRule>,
) -> ApiResult<ProgressionRule> {
    let rule = checked(state, rule)?;
    let stored = state.store.create_rule(&rule).await?;
    tracing::info!(rule = %stored.id, "rule created");
    Ok(stored)
}

/// One rule.
pub(crate) async fn get(state: &AppState, id: &str) -> ApiResult<ProgressionRule> {
    validate::identifier("id", id, MAX_RULE_ID)?;
    Ok(state.store.get_rule(id).await?)
}

/// Rules, optionally the enabled ones only.
pub(crate) async fn list(
    state: &AppState,
    enabled_only: bool,
    page: &PageParams,
) -> ApiResult<Page<ProgressionRule>> {
    let listing = Listing::new("ListRules", &[if enabled_only { "enabled" } else { "all" }]);
    let request = PageRequest::<String>::parse(page, listing)?;
    let rules = state
        .store
        .list_rules(enabled_only, request.after.as_deref(), request.fetch())
        .await?;
    Ok(request.page(rules, |rule| rule.id.clone()))
}

/// Replaces a stored rule.
pub(crate) async fn update(
    state: &AppState,
    rule: Option<ProgressionRule>,
) -> ApiResult<ProgressionRule> {
    let rule = checked(state, rule)?;
    let stored = state.store.update_rule(&rule).await?;
    tracing::info!(rule = %stored.id, "rule updated");
    Ok(stored)
}

/// Deletes a rule.
pub(crate) async fn delete(state: &AppState, id: &str) -> ApiResult<()> {
    validate::identifier("id", id, MAX_RULE_ID)?;
    state.store.delete_rule(id).await?;
    tracing::info!(rule = %id, "rule deleted");
    Ok(())
}

/// Enables or disables a rule.
pub(crate) async fn set_enabled(
    state: &AppState,
    id: &str,
    enabled: bool,
) -> ApiResult<ProgressionRule> {
    validate::identifier("id", id, MAX_RULE_ID)?;
    Ok(state.store.set_rule_enabled(id, enabled).await?)
}

/// Dry run: the live sessions a stored or inline rule matches now, from
/// the store (this replica need not be the one running the orchestrator).
pub(crate) async fn evaluate(
    state: &AppState,
    target: Option<Target>,
    limit: i32,
) -> ApiResult<Evaluation> {
    let limit = validate::page_size("limit", limit)? as usize;
    let rule = match target {
        Some(Target::Id(id)) => get(state, &id).await?,
        Some(Target::Rule(rule)) => checked(state, Some(rule))?,
        None => {
            return Err(ApiError::invalid(
                "target",
                "must be a stored rule's id or an inline rule",
            ))
        }
    };
    let compiled = Arc::new(
        CompiledRule::new(rule.clone())
            .map_err(|(field, message)| ApiError::invalid(field, message))?,
    );
    let (sessions, examined) =
        orchestrator::dry_run(&state.store, compiled.clone(), now_ms(), limit).await?;
    state.metrics.rules_evaluated.inc_by(examined);
    let matches = sessions
        .iter()
        .map(|s| RuleMatch {
            session_id: s.id.clone(),
            action_kind: compiled.kind.to_string(),
            description: describe(&rule, s),
        })
        .collect();
    Ok(Evaluation {
        matches,
        sessions_evaluated: examined,
    })
}
