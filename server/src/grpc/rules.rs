//! `RuleService`: decodes each call, makes one call into
//! [`crate::service::rules`] and encodes the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    rule_service_server::RuleService, CreateRuleRequest, CreateRuleResponse, DeleteRuleRequest,
    DeleteRuleResponse, EvaluateRuleRequest, EvaluateRuleResponse, GetRuleRequest, GetRuleResponse,
    ListRulesRequest, ListRulesResponse, SetRuleEnabledRequest, SetRuleEnabledResponse,
    UpdateRuleRequest, UpdateRuleResponse,
};

use crate::{
    service::{rules, PageParams},
    AppState,
};

/// The RuleService implementation.
pub(crate) struct RuleApi {
    state: Arc<AppState>,
}

impl RuleApi {
    /// Serves from `state`.
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        RuleApi { state }
    }
}

#[tonic::async_trait]
impl RuleService for RuleApi {
    async fn create_rule(
        &self,
        request: Request<CreateRuleRequest>,
    ) -> Result<Response<CreateRuleResponse>, Status> {
        let rule = rules::create(&self.state, request.into_inner().rule).await?;
        Ok(Response::new(CreateRuleResponse { rule: Some(rule) }))
    }

    async fn get_rule(
        &self,
        request: Request<GetRuleRequest>,
    ) -> Result<Response<GetRuleResponse>, Status> {
        let rule = rules::get(&self.state, &request.get_ref().id).await?;
        Ok(Response::new(GetRuleResponse { rule: Some(rule) }))
    }

    async fn list_rules(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        let r = request.into_inner();
        let page = PageParams {
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let found = rules::list(&self.state, r.enabled_only, &page).await?;
        Ok(Response::new(ListRulesResponse {
            rules: found.items,
            next_page_token: found.next_page_token,
        }))
    }

    async fn update_rule(
        &self,
        request: Request<UpdateRuleRequest>,
    ) -> Result<Response<UpdateRuleResponse>, Status> {
        let rule = rules::update(&self.state, request.into_inner().rule).await?;
        Ok(Response::new(UpdateRuleResponse { rule: Some(rule) }))
    }

    async fn delete_rule(
        &self,
        request: Request<DeleteRuleRequest>,
    ) -> Result<Response<DeleteRuleResponse>, Status> {
        rules::delete(&self.state, &request.get_ref().id).await?;
        Ok(Response::new(DeleteRuleResponse {}))
    }

    async fn set_rule_enabled(
        &self,
        request: Request<SetRuleEnabledRequest>,
    ) -> Result<Response<SetRuleEnabledResponse>, Status> {
        let r = request.get_ref();
        let rule = rules::set_enabled(&self.state, &r.id, r.enabled).await?;
        Ok(Response::new(SetRuleEnabledResponse { rule: Some(rule) }))
    }

    async fn evaluate_rule(
        &self,
        request: Request<EvaluateRuleRequest>,
    ) -> Result<Response<EvaluateRuleResponse>, Status> {
        let r = request.into_inner();
        let found = rules::evaluate(&self.state, r.target, r.limit).await?;
        Ok(Response::new(EvaluateRuleResponse {
            matches: found.matches,
            sessions_evaluated: found.sessions_evaluated,
        }))
    }
}
