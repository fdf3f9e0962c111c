//! The states and statuses kept in the store, as Rust enums with their
//! stored text in one place. Reading a value this release does not know is
//! an error (a newer replica wrote it, or the row is damaged), never a
//! silent `Unspecified`.

use std::{fmt, str::FromStr};

use valence_lifecycle_api::v1 as proto;

/// A stored text that names no known state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {kind}")]
pub struct UnknownState {
    /// What was being read (`account request status`, ...).
    pub kind: &'static str,
    /// The text found.
    pub value: String,
}

/// Declares a state enum with its stored text, `as_str`, `FromStr`,
/// `Display` and the list of all values.
macro_rules! stored_enum {
    (
        $(#[$doc:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vdoc:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database (and used in REST queries).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownState { kind: $kind, value: text.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// Where an account request stands.
    RequestStatus, "account request status" {
        /// Waiting for the builder.
        Pending => "pending",
        /// The builder is working on it (a transaction may be out).
        Processing => "processing",
        /// Its account exists.
        Initialized => "initialized",
        /// Parked after a failure; `RetryAccountRequest` puts it back.
        Failed => "failed",
    }
}

stored_enum! {
    /// A step of an entity's linear progression (seed 000).
    LinearState, "linear state" {
        /// A request for an account.
        AccountRequest => "account_request",
        /// An initialized account.
        Account => "account",
        /// An account that is a member of a session.
        InSession => "in_session",
        /// A session.
        Session => "session",
        /// A session in use.
        ActiveSession => "active_session",
        /// A consumed session, or an account whose session was consumed.
        ConsumedSession => "consumed_session",
        /// An account request whose initialization failed.
        Failed => "failed",
        /// A session reserved on chain, not queued or created yet (seed 001).
        ReservedSession => "reserved_session",
        /// A reserved session in the chain's initialization queue.
        QueuedSession => "queued_session",
        /// A reservation released by an emergency reset (terminal).
        ResetSession => "reset_session",
    }
}

stored_enum! {
    /// The kind of entity a progression belongs to.
    EntityKind, "entity kind" {
        /// An account (and the request it came from).
        Account => "account",
        /// A session.
        Session => "session",
    }
}

stored_enum! {
    /// Where a rule's action for one (rule, session, state) stands.
    ActionStatus, "action status" {
        /// AUTO_PROGRESS off: the match was reported, nothing is sent.
        Reported => "reported",
        /// Recorded; nothing sent yet.
        Pending => "pending",
        /// A transaction or request may have gone out.
        Sent => "sent",
        /// Done.
        Executed => "executed",
        /// Gave up.
        Failed => "failed",
        /// Not finished within CONSUMPTION_TIMEOUT.
        Expired => "expired",
    }
}

stored_enum! {
    /// Where a singleton program stands, as last seen or operated.
    SingletonState, "singleton status" {
        /// Not initialized yet.
        Uninitialized => "uninitialized",
        /// Initialized and running.
        Active => "active",
        /// Paused for maintenance.
        Paused => "paused",
        /// The last operation failed or chain state is inconsistent.
        Error => "error",
    }
}

impl From<SingletonState> for proto::SingletonStatus {
    fn from(s: SingletonState) -> Self {
        match s {
            SingletonState::Uninitialized => proto::SingletonStatus::Uninitialized,
            SingletonState::Active => proto::SingletonStatus::Active,
            SingletonState::Paused => proto::SingletonStatus::Paused,
            SingletonState::Error => proto::SingletonStatus::Error,
        }
    }
}

impl From<proto::SingletonStatus> for SingletonState {
    /// `Unspecified` ("not known") is stored as `error`: a state nobody
    /// can name is not one to trust.
    fn from(s: proto::SingletonStatus) -> Self {
        match s {
            proto::SingletonStatus::Uninitialized => SingletonState::Uninitialized,
            proto::SingletonStatus::Active => SingletonState::Active,
            proto::SingletonStatus::Paused => SingletonState::Paused,
            proto::SingletonStatus::Unspecified | proto::SingletonStatus::Error => {
                SingletonState::Error
            }
        }
    }
}

impl From<RequestStatus> for proto::AccountRequestStatus {
    fn from(s: RequestStatus) -> Self {
        match s {
            RequestStatus::Pending => proto::AccountRequestStatus::Pending,
            RequestStatus::Processing => proto::AccountRequestStatus::Processing,
            RequestStatus::Initialized => proto::AccountRequestStatus::Initialized,
            RequestStatus::Failed => proto::AccountRequestStatus::Failed,
        }
    }
}

impl TryFrom<proto::AccountRequestStatus> for RequestStatus {
    type Error = ();

    /// `Unspecified` has no domain value (a filter's "any").
    fn try_from(s: proto::AccountRequestStatus) -> Result<Self, ()> {
        match s {
            proto::AccountRequestStatus::Unspecified => Err(()),
            proto::AccountRequestStatus::Pending => Ok(RequestStatus::Pending),
            proto::AccountRequestStatus::Processing => Ok(RequestStatus::Processing),
            proto::AccountRequestStatus::Initialized => Ok(RequestStatus::Initialized),
            proto::AccountRequestStatus::Failed => Ok(RequestStatus::Failed),
        }
    }
}

impl From<LinearState> for proto::LinearState {
    fn from(s: LinearState) -> Self {
        match s {
            LinearState::AccountRequest => proto::LinearState::AccountRequest,
            LinearState::Account => proto::LinearState::Account,
            LinearState::InSession => proto::LinearState::InSession,
            LinearState::Session => proto::LinearState::Session,
            LinearState::ActiveSession => proto::LinearState::ActiveSession,
            LinearState::ConsumedSession => proto::LinearState::ConsumedSession,
            LinearState::Failed => proto::LinearState::Failed,
            LinearState::ReservedSession => proto::LinearState::ReservedSession,
            LinearState::QueuedSession => proto::LinearState::QueuedSession,
            LinearState::ResetSession => proto::LinearState::ResetSession,
        }
    }
}

impl From<EntityKind> for proto::EntityKind {
    fn from(k: EntityKind) -> Self {
        match k {
            EntityKind::Account => proto::EntityKind::Account,
            EntityKind::Session => proto::EntityKind::Session,
        }
    }
}

#[cfg(test)]
mod tests {
    use valence_lifecycle_api::json::short_name;

    use super::*;

    /// The stored text is the proto enum's short name, so rows written by
    /// earlier releases (which stored `short_name`) read back unchanged.
    #[test]
    fn stored_text_matches_the_proto_short_names() {
        for s in RequestStatus::ALL {
            let p = proto::AccountRequestStatus::from(*s);
            assert_eq!(
                s.as_str(),
                short_name::<proto::AccountRequestStatus>(p as i32)
            );
            assert_eq!(RequestStatus::try_from(p), Ok(*s));
        }
        for s in LinearState::ALL {
            let p = proto::LinearState::from(*s);
            assert_eq!(s.as_str(), short_name::<proto::LinearState>(p as i32));
        }
        for k in EntityKind::ALL {
            let p = proto::EntityKind::from(*k);
            assert_eq!(k.as_str(), short_name::<proto::EntityKind>(p as i32));
        }
        for s in SingletonState::ALL {
            let p = proto::SingletonStatus::from(*s);
            assert_eq!(s.as_str(), short_name::<proto::SingletonStatus>(p as i32));
            assert_eq!(SingletonState::from(p), *s);
        }
    }

    #[test]
    fn unknown_text_is_an_error_naming_the_kind() {
        let err = "paused".parse::<RequestStatus>().unwrap_err();
        assert_eq!(err.kind, "account request status");
        assert!(err.to_string().contains("paused"), "{err}");
        assert!("".parse::<LinearState>().is_err());
        assert!("unspecified".parse::<ActionStatus>().is_err());
    }

    #[test]
    fn every_value_round_trips_through_its_text() {
        for s in ActionStatus::ALL {
            assert_eq!(s.as_str().parse::<ActionStatus>(), Ok(*s));
        }
        for s in LinearState::ALL {
            assert_eq!(s.as_str().parse::<LinearState>(), Ok(*s));
        }
    }
}
