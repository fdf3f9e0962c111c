//! Progression rules in the JSON shape of seed 000 (`POST /rules`, rule
//! files for `lifecyclectl rules create`): externally tagged enums such as
//! `{"SessionIdleFor": 300}` and `{"ConsumeAndCreate": [ ... ]}`.
//!
//! This module only converts shapes; semantic validation (hash length, URL
//! scheme, CEL syntax, ...) is the server's, so every client gets the same
//! answer.

use serde::{Deserialize, Serialize};

use crate::v1::{self, rule_action, rule_condition};

/// A rule as seed 000 writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRule {
    /// Unique id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// When the rule applies.
    pub condition: SeedCondition,
    /// What it does.
    pub action: SeedAction,
    /// Whether it is evaluated (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

/// Seed 000's `ProgressionCondition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SeedCondition {
    /// Every account in the session has the capability.
    AllAccountsHaveCapability(String),
    /// Idle for this many seconds.
    SessionIdleFor(u64),
    /// Aggregate state hash equals this (hex string or 32-number array).
    StateHashMatches(HashValue),
    /// CEL expression.
    CustomPredicate(String),
}

/// A 32-byte hash written either as 64 hex characters or as an array of
/// 32 numbers (the shape a Rust `[u8; 32]` serializes to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HashValue {
    /// Hex text.
    Hex(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl HashValue {
    /// The hash as hex text (bytes are hex-encoded; length is checked by the server).
    pub fn to_hex(&self) -> String {
        match self {
            HashValue::Hex(s) => s.clone(),
            HashValue::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        }
    }
}

/// Seed 000's `ProgressionAction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SeedAction {
    /// Consume the session and create one session per template.
    ConsumeAndCreate(Vec<SeedSessionTemplate>),
    /// Execute a bundle on the session.
    ExecuteBundle(SeedBundle),
    /// POST a signed notification to this URL.
    NotifyWebhook(String),
}

/// A new-session template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSessionTemplate {
    /// Indices into the consumed session's accounts.
    pub account_indices: Vec<u32>,
    /// Namespace of the new session.
    pub namespace: String,
    /// Metadata bytes.
    #[serde(default)]
    pub metadata: Vec<u8>,
}

/// A bundle template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedBundle {
    /// Operations in order.
    pub operations: Vec<SeedOperation>,
}

/// One bundle operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOperation {
    /// Function hash, hex.
    pub function_hash: String,
    /// Argument template.
    #[serde(default)]
    pub args_template: String,
}

impl From<SeedRule> for v1::ProgressionRule {
    fn from(rule: SeedRule) -> Self {
        v1::ProgressionRule {
            id: rule.id,
            name: rule.name,
            condition: Some(v1::RuleCondition {
                kind: Some(rule.condition.into()),
            }),
            action: Some(v1::RuleAction {
                kind: Some(rule.action.into()),
            }),
            enabled: rule.enabled,
            created_at: None,
            updated_at: None,
        }
    }
}

impl From<SeedCondition> for rule_condition::Kind {
    fn from(c: SeedCondition) -> Self {
        match c {
            SeedCondition::AllAccountsHaveCapability(cap) => Self::AllAccountsHaveCapability(cap),
            SeedCondition::SessionIdleFor(s) => Self::SessionIdleForSeconds(s),
            SeedCondition::StateHashMatches(h) => Self::StateHashMatches(h.to_hex()),
            SeedCondition::CustomPredicate(e) => Self::CustomPredicate(e),
        }
    }
}

impl From<SeedAction> for rule_action::Kind {
    fn from(a: SeedAction) -> Self {
        match a {
            SeedAction::ConsumeAndCreate(templates) => {
                Self::ConsumeAndCreate(v1::ConsumeAndCreateAction {
                    templates: templates
                        .into_iter()
                        .map(|t| v1::SessionTemplate {
                            account_indices: t.account_indices,
                            namespace: t.namespace,
                            metadata: t.metadata,
                        })
                        .collect(),
                })
            }
            SeedAction::ExecuteBundle(b) => Self::ExecuteBundle(v1::ExecuteBundleAction {
                operations: b
                    .operations
                    .into_iter()
                    .map(|o| v1::BundleOperation {
                        function_hash: o.function_hash,
                        args_template: o.args_template,
                    })
                    .collect(),
            }),
            SeedAction::NotifyWebhook(url) => Self::NotifyWebhook(v1::NotifyWebhookAction { url }),
        }
    }
}

/// Why a stored rule cannot be shown in seed 000's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPart(pub &'static str);

impl TryFrom<&v1::ProgressionRule> for SeedRule {
    type Error = MissingPart;

    fn try_from(rule: &v1::ProgressionRule) -> Result<Self, MissingPart> {
        let condition = match rule.condition.as_ref().and_then(|c| c.kind.as_ref()) {
            Some(rule_condition::Kind::AllAccountsHaveCapability(c)) => {
                SeedCondition::AllAccountsHaveCapability(c.clone())
            }
            Some(rule_condition::Kind::SessionIdleForSeconds(s)) => {
                SeedCondition::SessionIdleFor(*s)
            }
            Some(rule_condition::Kind::StateHashMatches(h)) => {
                SeedCondition::StateHashMatches(HashValue::Hex(h.clone()))
            }
            Some(rule_condition::Kind::CustomPredicate(e)) => {
                SeedCondition::CustomPredicate(e.clone())
            }
            None => return Err(MissingPart("condition")),
        };
        let action = match rule.action.as_ref().and_then(|a| a.kind.as_ref()) {
            Some(rule_action::Kind::ConsumeAndCreate(c)) => SeedAction::ConsumeAndCreate(
                c.templates
                    .iter()
                    .map(|t| SeedSessionTemplate {
                        account_indices: t.account_indices.clone(),
                        namespace: t.namespace.clone(),
                        metadata: t.metadata.clone(),
                    })
                    .collect(),
            ),
            Some(rule_action::Kind::ExecuteBundle(b)) => SeedAction::ExecuteBundle(SeedBundle {
                operations: b
                    .operations
                    .iter()
                    .map(|o| SeedOperation {
                        function_hash: o.function_hash.clone(),
                        args_template: o.args_template.clone(),
                    })
                    .collect(),
            }),
            Some(rule_action::Kind::NotifyWebhook(w)) => SeedAction::NotifyWebhook(w.url.clone()),
            None => return Err(MissingPart("action")),
        };
        Ok(SeedRule {
            id: rule.id.clone(),
            name: rule.name.clone(),
            condition,
            action,
            enabled: rule.enabled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_EXAMPLE: &str = r#"{
      "id": "rule-1",
      "name": "Auto-consume idle sessions",
      "condition": { "SessionIdleFor": 300 },
      "action": { "ConsumeAndCreate": [{ "account_indices": [0, 1], "namespace": "recycled", "metadata": [] }] },
      "enabled": true
    }"#;

    #[test]
    fn seed_example_round_trips_through_proto() {
        let seed: SeedRule = serde_json::from_str(SEED_EXAMPLE).unwrap();
        let proto: v1::ProgressionRule = seed.clone().into();
        assert_eq!(
            proto.condition.as_ref().unwrap().kind,
            Some(rule_condition::Kind::SessionIdleForSeconds(300))
        );
        let back = SeedRule::try_from(&proto).unwrap();
        assert_eq!(back, seed);
        let value: serde_json::Value = serde_json::to_value(&back).unwrap();
        let original: serde_json::Value = serde_json::from_str(SEED_EXAMPLE).unwrap();
        assert_eq!(value, original);
    }

    #[test]
    fn unknown_condition_is_an_error_naming_it() {
        let body = SEED_EXAMPLE.replace("SessionIdleFor", "SessionSleepy");
        let err = serde_json::from_str::<SeedRule>(&body)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SessionSleepy"), "{err}");
    }

    #[test]
    fn hash_accepts_hex_and_byte_arrays() {
        let hex: SeedCondition = serde_json::from_str(r#"{"StateHashMatches": "ab"}"#).unwrap();
        let bytes: SeedCondition = serde_json::from_str(r#"{"StateHashMatches": [171]}"#).unwrap();
        assert_eq!(
            rule_condition::Kind::from(hex),
            rule_condition::Kind::from(bytes)
        );
    }

    #[test]
    fn event_type_names_are_short_and_parse_back() {
        use crate::json::{parse_name, short_name};
        let v = v1::EventType::SessionCreated as i32;
        assert_eq!(short_name::<v1::EventType>(v), "session_created");
        assert_eq!(parse_name::<v1::EventType>("session_created"), Some(v));
        assert_eq!(
            parse_name::<v1::EventType>("EVENT_TYPE_SESSION_CREATED"),
            Some(v)
        );
        assert_eq!(parse_name::<v1::EventType>("nope"), None);
    }

    #[test]
    fn generated_messages_serialize_as_canonical_proto3_json() {
        let session = v1::Session {
            id: "s".into(),
            state: v1::LinearState::ActiveSession as i32,
            nonce: 7,
            created_at: Some(crate::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&session).unwrap();
        assert_eq!(json["state"], "LINEAR_STATE_ACTIVE_SESSION");
        assert_eq!(json["nonce"], "7", "64-bit integers are strings");
        assert_eq!(json["isConsumed"], false, "defaults are emitted");
        let back: v1::Session = serde_json::from_value(json).unwrap();
        assert_eq!(back, session);
    }

    #[test]
    fn a_rule_has_the_proto3_shape_with_the_oneof_inlined() {
        let seed: SeedRule = serde_json::from_str(SEED_EXAMPLE).unwrap();
        let json = serde_json::to_value(v1::ProgressionRule::from(seed)).unwrap();
        assert_eq!(
            json["condition"],
            serde_json::json!({ "sessionIdleForSeconds": "300" })
        );
        assert_eq!(
            json["action"]["consumeAndCreate"]["templates"][0]["accountIndices"],
            serde_json::json!([0, 1])
        );
    }
}
