//! Event types: which `EventType` each payload has. The payload field
//! numbers in events.proto equal the EventType values, which a unit test
//! below checks, so the two cannot drift apart.

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
    }
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
}
