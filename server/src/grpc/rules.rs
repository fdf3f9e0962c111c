//! `RuleService`: progression rule management.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    evaluate_rule_request::Target, rule_service_server::RuleService, CreateRuleRequest,
    CreateRuleResponse, DeleteRuleRequest, DeleteRuleResponse, EvaluateRuleRequest,
    EvaluateRuleResponse, GetRuleRequest, GetRuleResponse, ListRulesRequest, ListRulesResponse,
    ProgressionRule, RuleMatch, SetRuleEnabledRequest, SetRuleEnabledResponse, UpdateRuleRequest,
    UpdateRuleResponse,
};

use crate::{
    error::{ApiError, ApiResult},
    orchestrator::{conditions::describe, engine::CompiledRule, load_engine, rules::validate_rule},
    store::now_ms,
    validate, AppState,
};

/// The RuleService implementation.
pub struct RuleApi {
    state: Arc<AppState>,
}

impl RuleApi {
    /// Serves from `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        RuleApi { state }
    }
}

/// Validates and stores a new rule; shared with `POST /rules`.
pub(crate) async fn create_rule(
    state: &AppState,
    rule: Option<ProgressionRule>,
) -> ApiResult<ProgressionRule> {
    let rule = rule.ok_or_else(|| ApiError::invalid("rule", "must be set"))?;
    validate_rule(&rule, state.config.lifecycle.max_accounts_per_session)?;
    let stored = state.store.create_rule(&rule).await?;
    tracing::info!(rule = %stored.id, "rule created");
    Ok(stored)
}

/// Dry run: the live sessions a stored or inline rule matches now, from
/// the store (this replica need not be the one running the orchestrator).
pub(crate) async fn evaluate_rule(
    state: &AppState,
    request: EvaluateRuleRequest,
) -> ApiResult<EvaluateRuleResponse> {
    let limit = validate::page_size("limit", request.limit)? as usize;
    let rule = match request.target {
        Some(Target::Id(id)) => {
            validate::identifier("id", &id, 128)?;
            state.store.get_rule(&id).await?
        }
        Some(Target::Rule(rule)) => {
            validate_rule(&rule, state.config.lifecycle.max_accounts_per_session)?;
            rule
        }
        None => {
            return Err(ApiError::invalid(
                "target",
                "must be a stored rule's id or an inline rule",
            ))
        }
    };
    let compiled = CompiledRule::new(rule.clone())
        .map_err(|(field, message)| ApiError::invalid(field, message))?;
    let mut engine = load_engine(&state.store).await?;
    let (sessions, examined) = engine.dry_run(&compiled, now_ms(), limit);
    state.metrics.rules_evaluated.inc_by(examined);
    let matches = sessions
        .iter()
        .map(|s| RuleMatch {
            session_id: s.id.clone(),
            action_kind: compiled.kind.to_string(),
            description: describe(&rule, s),
        })
        .collect();
    Ok(EvaluateRuleResponse {
        matches,
        sessions_evaluated: examined,
    })
}

#[tonic::async_trait]
impl RuleService for RuleApi {
    async fn create_rule(
        &self,
        request: Request<CreateRuleRequest>,
    ) -> Result<Response<CreateRuleResponse>, Status> {
        let rule = create_rule(&self.state, request.into_inner().rule).await?;
        Ok(Response::new(CreateRuleResponse { rule: Some(rule) }))
    }

    async fn get_rule(
        &self,
        request: Request<GetRuleRequest>,
    ) -> Result<Response<GetRuleResponse>, Status> {
        let id = &request.get_ref().id;
        validate::identifier("id", id, 128)?;
        let rule = self.state.store.get_rule(id).await?;
        Ok(Response::new(GetRuleResponse { rule: Some(rule) }))
    }

    async fn list_rules(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        let r = request.get_ref();
        let limit = validate::page_size("page_size", r.page_size)?;
        let offset = validate::page_token(&r.page_token)?;
        let rules = self
            .state
            .store
            .list_rules(r.enabled_only, limit, offset)
            .await?;
        let next_page_token = validate::next_page_token(offset, limit, rules.len());
        Ok(Response::new(ListRulesResponse {
            rules,
            next_page_token,
        }))
    }

    async fn update_rule(
        &self,
        request: Request<UpdateRuleRequest>,
    ) -> Result<Response<UpdateRuleResponse>, Status> {
        let rule = request
            .into_inner()
            .rule
            .ok_or_else(|| ApiError::invalid("rule", "must be set"))?;
        validate_rule(&rule, self.state.config.lifecycle.max_accounts_per_session)?;
        let rule = self.state.store.update_rule(&rule).await?;
        Ok(Response::new(UpdateRuleResponse { rule: Some(rule) }))
    }

    async fn delete_rule(
        &self,
        request: Request<DeleteRuleRequest>,
    ) -> Result<Response<DeleteRuleResponse>, Status> {
        let id = &request.get_ref().id;
        validate::identifier("id", id, 128)?;
        self.state.store.delete_rule(id).await?;
        Ok(Response::new(DeleteRuleResponse {}))
    }

    async fn set_rule_enabled(
        &self,
        request: Request<SetRuleEnabledRequest>,
    ) -> Result<Response<SetRuleEnabledResponse>, Status> {
        let r = request.get_ref();
        validate::identifier("id", &r.id, 128)?;
        let rule = self.state.store.set_rule_enabled(&r.id, r.enabled).await?;
        Ok(Response::new(SetRuleEnabledResponse { rule: Some(rule) }))
    }

    async fn evaluate_rule(
        &self,
        request: Request<EvaluateRuleRequest>,
    ) -> Result<Response<EvaluateRuleResponse>, Status> {
        Ok(Response::new(
            evaluate_rule(&self.state, request.into_inner()).await?,
        ))
    }
}
