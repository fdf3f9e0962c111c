//! Event types: which `EventType` each payload has, and which entities
//! besides its own an event concerns. The payload field numbers in
//! events.proto equal the EventType values, which a unit test below checks,
//! so the two cannot drift apart.

use valence_lifecycle_api::v1::{lifecycle_event::Payload, EventType};

/// The event type of a payload.
pub(super) fn event_type_of(payload: &Payload) -> EventType {
    match payload {
        Payload::AccountRequested(_) => EventType::AccountRequested,
        Payload::AccountInitialized(_) => EventType::AccountInitialized,
        Payload::AccountInitializationFailed(_) => EventType::AccountInitializationFailed,
        Payload::SessionCreated(_) => EventType::SessionCreated,
        Payload::SessionConsumed(_) => EventType::SessionConsumed,
        Payload::StateTransition(_) => EventType::StateTransition,
        Payload::ProgressionChanged(_) => EventType::ProgressionChanged,
        Payload::AccountRequestRequeued(_) => EventType::AccountRequestRequeued,
        Payload::PdaComputed(_) => EventType::PdaComputed,
        Payload::SessionQueued(_) => EventType::SessionQueued,
        Payload::QueueProcessed(_) => EventType::QueueProcessed,
        Payload::SessionReserved(_) => EventType::SessionReserved,
        Payload::ChainSessionCreated(_) => EventType::ChainSessionCreated,
        Payload::SessionActivated(_) => EventType::SessionActivated,
        Payload::SessionInitializedFromQueue(_) => EventType::SessionInitializedFromQueue,
        Payload::ManualSessionInitialized(_) => EventType::ManualSessionInitialized,
        Payload::EmergencySessionReset(_) => EventType::EmergencySessionReset,
        Payload::RuleCreated(_) => EventType::RuleCreated,
        Payload::RuleUpdated(_) => EventType::RuleUpdated,
        Payload::RuleEnabled(_) => EventType::RuleEnabled,
        Payload::RuleDisabled(_) => EventType::RuleDisabled,
        Payload::RuleDeleted(_) => EventType::RuleDeleted,
        Payload::RuleMatched(_) => EventType::RuleMatched,
        Payload::ActionExecuted(_) => EventType::ActionExecuted,
        Payload::ActionFailed(_) => EventType::ActionFailed,
        Payload::SingletonOperation(_) => EventType::SingletonOperation,
        Payload::ComponentStarted(_) => EventType::ComponentStarted,
        Payload::ComponentStopped(_) => EventType::ComponentStopped,
        Payload::ComponentStatusChanged(_) => EventType::ComponentStatusChanged,
        Payload::ComponentHeartbeatTimeout(_) => EventType::ComponentHeartbeatTimeout,
        Payload::ComponentReconnecting(_) => EventType::ComponentReconnecting,
        Payload::ComponentReconnected(_) => EventType::ComponentReconnected,
        Payload::ComponentReconnectFailed(_) => EventType::ComponentReconnectFailed,
        Payload::ComponentError(_) => EventType::ComponentError,
        Payload::LeadershipChanged(_) => EventType::LeadershipChanged,
        Payload::SessionAnomaly(_) => EventType::SessionAnomaly,
        Payload::ChainGap(_) => EventType::ChainGap,
    }
}

/// Every entity an event about `entity_id` with `payload` concerns,
/// `entity_id` first, each once (no empty ids). What `entity_ids` in the
/// API lists and what the entity filters match.
pub(crate) fn entities_of(entity_id: &str, payload: &Payload) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if !id.is_empty() && !ids.iter().any(|known| known == id) {
            ids.push(id.to_string());
        }
    };
    add(entity_id);
    match payload {
        Payload::AccountRequested(p) => add(&p.request_id),
        Payload::AccountInitialized(p) => {
            add(&p.account_id);
            add(&p.request_id);
        }
        Payload::AccountInitializationFailed(p) => add(&p.request_id),
        Payload::AccountRequestRequeued(p) => add(&p.request_id),
        Payload::PdaComputed(p) => add(&p.request_id),
        Payload::SessionCreated(p) => {
            add(&p.session_id);
            p.accounts.iter().for_each(|a| add(a));
        }
        Payload::ChainSessionCreated(p) => {
            add(&p.session_id);
            p.accounts.iter().for_each(|a| add(a));
        }
        Payload::SessionConsumed(p) => {
            add(&p.session_id);
            p.created_sessions.iter().for_each(|s| add(s));
        }
        Payload::StateTransition(p) => add(&p.entity_id),
        Payload::ProgressionChanged(p) => {
            add(&p.entity_id);
            p.successors.iter().for_each(|s| add(s));
        }
        Payload::SessionQueued(p) => add(&p.session_id),
        Payload::SessionReserved(p) => add(&p.session_id),
        Payload::SessionActivated(p) => add(&p.session_id),
        Payload::SessionInitializedFromQueue(p) => add(&p.session_id),
        Payload::ManualSessionInitialized(p) => add(&p.session_id),
        Payload::EmergencySessionReset(p) => add(&p.session_id),
        Payload::RuleMatched(p) => {
            add(&p.session_id);
            add(&p.rule_id);
        }
        Payload::ActionExecuted(p) | Payload::ActionFailed(p) => {
            add(&p.session_id);
            add(&p.rule_id);
        }
        Payload::RuleCreated(p)
        | Payload::RuleUpdated(p)
        | Payload::RuleEnabled(p)
        | Payload::RuleDisabled(p)
        | Payload::RuleDeleted(p) => {
            if let Some(rule) = &p.rule {
                add(&rule.id);
            }
        }
        Payload::SessionAnomaly(p) => add(&p.session_id),
        Payload::QueueProcessed(_)
        | Payload::ChainGap(_)
        | Payload::SingletonOperation(_)
        | Payload::ComponentStarted(_)
        | Payload::ComponentStopped(_)
        | Payload::ComponentStatusChanged(_)
        | Payload::ComponentHeartbeatTimeout(_)
        | Payload::ComponentReconnecting(_)
        | Payload::ComponentReconnected(_)
        | Payload::ComponentReconnectFailed(_)
        | Payload::ComponentError(_)
        | Payload::LeadershipChanged(_) => {}
    }
    ids
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use valence_lifecycle_api::v1::{LifecycleEvent, RuleChanged, SessionCreated};

    use super::*;

    /// A payload's field number (read back from its encoding) must equal its EventType value.
    fn field_number(payload: Payload) -> u64 {
        let bytes = LifecycleEvent {
            payload: Some(payload),
            ..Default::default()
        }
        .encode_to_vec();
        let mut buf = bytes.as_slice();
        prost::encoding::decode_varint(&mut buf).unwrap() >> 3
    }

    #[test]
    fn payload_field_numbers_match_event_types() {
        let cases = [
            Payload::SessionCreated(SessionCreated::default()),
            Payload::RuleDeleted(RuleChanged::default()),
            Payload::ComponentError(Default::default()),
            Payload::LeadershipChanged(Default::default()),
            Payload::PdaComputed(Default::default()),
            Payload::AccountRequested(Default::default()),
        ];
        for payload in cases {
            let ty = event_type_of(&payload);
            assert_eq!(field_number(payload), ty as u64, "{ty:?}");
        }
    }

    #[test]
    fn an_initialization_concerns_its_account_and_its_request_once() {
        let payload = Payload::AccountInitialized(valence_lifecycle_api::v1::AccountInitialized {
            account_id: "acct".into(),
            request_id: "req".into(),
            ..Default::default()
        });
        assert_eq!(entities_of("acct", &payload), ["acct", "req"]);
        let consumed = Payload::SessionConsumed(valence_lifecycle_api::v1::SessionConsumed {
            session_id: "s".into(),
            created_sessions: vec!["t".into(), "".into(), "s".into()],
            ..Default::default()
        });
        assert_eq!(entities_of("s", &consumed), ["s", "t"]);
        assert_eq!(
            entities_of("", &Payload::QueueProcessed(Default::default())),
            Vec::<String>::new()
        );
    }
}
