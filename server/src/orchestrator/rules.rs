//! Rule validation, applied on every write (gRPC and REST alike), so that
//! nothing malformed is ever stored. Errors name the offending field.

use valence_lifecycle_api::v1::{rule_action, rule_condition, ProgressionRule};

use crate::{
    error::{ApiError, ApiResult},
    validate,
};

/// Longest rule name.
const MAX_NAME: usize = 256;
/// Longest namespace or capability.
const MAX_LABEL: usize = 64;

/// Checks a rule before it is stored.
pub fn validate_rule(rule: &ProgressionRule, max_accounts_per_session: u32) -> ApiResult<()> {
    validate::identifier("rule.id", &rule.id, 128)?;
    if rule.name.trim().is_empty() || rule.name.len() > MAX_NAME {
        return Err(ApiError::invalid(
            "rule.name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    let condition = rule
        .condition
        .as_ref()
        .and_then(|c| c.kind.as_ref())
        .ok_or_else(|| {
            ApiError::invalid(
                "rule.condition",
                "must be set to one of the known conditions",
            )
        })?;
    validate_condition(condition)?;
    let action = rule
        .action
        .as_ref()
        .and_then(|a| a.kind.as_ref())
        .ok_or_else(|| {
            ApiError::invalid("rule.action", "must be set to one of the known actions")
        })?;
    validate_action(action, max_accounts_per_session)
}

fn validate_condition(condition: &rule_condition::Kind) -> ApiResult<()> {
    use rule_condition::Kind;
    match condition {
        Kind::AllAccountsHaveCapability(cap) => {
            label("rule.condition.all_accounts_have_capability", cap)
        }
        Kind::SessionIdleForSeconds(0) => Err(ApiError::invalid(
            "rule.condition.session_idle_for_seconds",
            "must be greater than 0",
        )),
        Kind::SessionIdleForSeconds(_) => Ok(()),
        Kind::StateHashMatches(hash) => {
            validate::hash_hex("rule.condition.state_hash_matches", hash).map(|_| ())
        }
        Kind::CustomPredicate(expr) if expr.trim().is_empty() => Err(ApiError::invalid(
            "rule.condition.custom_predicate",
            "must not be empty",
        )),
        Kind::CustomPredicate(expr) => super::conditions::compile_cel(expr)
            .map(|_| ())
            .map_err(|e| ApiError::invalid("rule.condition.custom_predicate", e)),
    }
}

fn validate_action(action: &rule_action::Kind, max_accounts: u32) -> ApiResult<()> {
    use rule_action::Kind;
    match action {
        Kind::ConsumeAndCreate(c) => {
            if c.templates.is_empty() {
                return Err(ApiError::invalid(
                    "rule.action.consume_and_create.templates",
                    "needs at least one template",
                ));
            }
            for (i, t) in c.templates.iter().enumerate() {
                let field = format!("rule.action.consume_and_create.templates[{i}]");
                validate_template(&field, &t.account_indices, &t.namespace, max_accounts)?;
            }
            Ok(())
        }
        Kind::ExecuteBundle(b) => {
            if b.operations.is_empty() {
                return Err(ApiError::invalid(
                    "rule.action.execute_bundle.operations",
                    "needs at least one operation",
                ));
            }
            for (i, op) in b.operations.iter().enumerate() {
                let field = format!("rule.action.execute_bundle.operations[{i}].function_hash");
                validate::hash_hex(&field, &op.function_hash)?;
            }
            Ok(())
        }
        Kind::NotifyWebhook(w) => webhook_url(&w.url),
    }
}

fn validate_template(
    field: &str,
    indices: &[u32],
    namespace: &str,
    max_accounts: u32,
) -> ApiResult<()> {
    if indices.is_empty() {
        return Err(ApiError::invalid(
            format!("{field}.account_indices"),
            "needs at least one index",
        ));
    }
    if let Some(bad) = indices.iter().find(|i| **i >= max_accounts) {
        return Err(ApiError::invalid(
            format!("{field}.account_indices"),
            format!("index {bad} is beyond MAX_ACCOUNTS_PER_SESSION ({max_accounts})"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = indices.iter().find(|i| !seen.insert(**i)) {
        return Err(ApiError::invalid(
            format!("{field}.account_indices"),
            format!("index {dup} appears twice"),
        ));
    }
    label(&format!("{field}.namespace"), namespace)
}

fn label(field: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > MAX_LABEL {
        return Err(ApiError::invalid(
            field,
            format!("must be 1 to {MAX_LABEL} characters"),
        ));
    }
    Ok(())
}

fn webhook_url(url: &str) -> ApiResult<()> {
    const FIELD: &str = "rule.action.notify_webhook.url";
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ApiError::invalid(FIELD, format!("{url:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Some("http") | Some("https") => {
            Err(ApiError::invalid(FIELD, format!("{url:?} has no host")))
        }
        _ => Err(ApiError::invalid(
            FIELD,
            format!("{url:?} must be an http:// or https:// URL"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use valence_lifecycle_api::rule_json::SeedRule;

    use super::*;

    fn rule(condition: &str, action: &str) -> ProgressionRule {
        let json = format!(
            r#"{{"id":"r1","name":"n","condition":{condition},"action":{action},"enabled":true}}"#
        );
        serde_json::from_str::<SeedRule>(&json).unwrap().into()
    }

    const CONSUME: &str =
        r#"{"ConsumeAndCreate":[{"account_indices":[0,1],"namespace":"recycled","metadata":[]}]}"#;

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn seed_example_is_valid() {
        assert!(validate_rule(&rule(r#"{"SessionIdleFor":300}"#, CONSUME), 10).is_ok());
    }

    #[test]
    fn bad_rules_name_the_field() {
        let cases = [
            (
                rule(r#"{"SessionIdleFor":0}"#, CONSUME),
                "rule.condition.session_idle_for_seconds",
            ),
            (
                rule(r#"{"StateHashMatches":"abc"}"#, CONSUME),
                "rule.condition.state_hash_matches",
            ),
            (
                rule(
                    r#"{"SessionIdleFor":5}"#,
                    r#"{"ConsumeAndCreate":[{"account_indices":[10],"namespace":"x"}]}"#,
                ),
                "rule.action.consume_and_create.templates[0].account_indices",
            ),
            (
                rule(r#"{"SessionIdleFor":5}"#, r#"{"NotifyWebhook":"ftp://x"}"#),
                "rule.action.notify_webhook.url",
            ),
            (
                rule(r#"{"SessionIdleFor":5}"#, r#"{"ConsumeAndCreate":[]}"#),
                "rule.action.consume_and_create.templates",
            ),
            (
                rule(r#"{"CustomPredicate":"session.nonce >"}"#, CONSUME),
                "rule.condition.custom_predicate",
            ),
            (
                rule(r#"{"CustomPredicate":"nonce > 1"}"#, CONSUME),
                "rule.condition.custom_predicate",
            ),
        ];
        for (rule, field) in cases {
            assert_eq!(field_of(validate_rule(&rule, 10).unwrap_err()), field);
        }
    }

    #[test]
    fn ids_and_missing_parts() {
        let mut r = rule(r#"{"SessionIdleFor":5}"#, CONSUME);
        r.id = "has space".into();
        assert_eq!(field_of(validate_rule(&r, 10).unwrap_err()), "rule.id");
        let mut r = rule(r#"{"SessionIdleFor":5}"#, CONSUME);
        r.condition = None;
        assert_eq!(
            field_of(validate_rule(&r, 10).unwrap_err()),
            "rule.condition"
        );
    }
}
