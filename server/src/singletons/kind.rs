//! The three singletons, their fixed order and their names on the wire.

use valence_lifecycle_api::v1::SingletonKind;

use crate::error::{ApiError, ApiResult};

/// One of the three singleton programs (seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Stateless execution orchestration; initialized first.
    Processor,
    /// Multi-shard scheduling and queues; initialized second.
    Scheduler,
    /// State diff calculation; initialized last.
    Diff,
}

/// Initialization and pause order.
pub const INIT_ORDER: [Kind; 3] = [Kind::Processor, Kind::Scheduler, Kind::Diff];
/// Pause order: the same as initialization.
pub const PAUSE_ORDER: [Kind; 3] = INIT_ORDER;
/// Resume order: the reverse of pause (seed 002).
pub const RESUME_ORDER: [Kind; 3] = [Kind::Diff, Kind::Scheduler, Kind::Processor];

impl Kind {
    /// Lower-case name: `processor`, `scheduler`, `diff` (also the event's
    /// `singleton` field and the entity id of its events).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Processor => "processor",
            Kind::Scheduler => "scheduler",
            Kind::Diff => "diff",
        }
    }

    /// The `kind` byte of the `initialize` instruction and of SingletonState.
    pub fn code(self) -> u8 {
        match self {
            Kind::Processor => 1,
            Kind::Scheduler => 2,
            Kind::Diff => 3,
        }
    }

    /// The kind with this `kind` byte.
    pub fn from_code(code: u8) -> Option<Kind> {
        INIT_ORDER.into_iter().find(|k| k.code() == code)
    }

    /// Parses a lower-case name.
    pub fn from_name(name: &str) -> Option<Kind> {
        INIT_ORDER.into_iter().find(|k| k.name() == name)
    }

    /// The protobuf enum value.
    pub fn proto(self) -> SingletonKind {
        match self {
            Kind::Processor => SingletonKind::Processor,
            Kind::Scheduler => SingletonKind::Scheduler,
            Kind::Diff => SingletonKind::Diff,
        }
    }

    /// The kind of a request field; InvalidArgument naming `field` otherwise.
    pub fn from_proto(field: &str, value: i32) -> ApiResult<Kind> {
        match SingletonKind::try_from(value) {
            Ok(SingletonKind::Processor) => Ok(Kind::Processor),
            Ok(SingletonKind::Scheduler) => Ok(Kind::Scheduler),
            Ok(SingletonKind::Diff) => Ok(Kind::Diff),
            _ => Err(ApiError::invalid(
                field,
                format!("{value} is not a singleton: give processor, scheduler or diff (or all)"),
            )),
        }
    }

    /// Singletons that must be initialized before this one.
    pub fn prerequisites(self) -> &'static [Kind] {
        match self {
            Kind::Processor => &[],
            Kind::Scheduler => &[Kind::Processor],
            Kind::Diff => &[Kind::Processor, Kind::Scheduler],
        }
    }

    /// Seed of the state account's address (`create_with_seed` from the authority).
    pub fn state_seed(self) -> String {
        format!("singleton-{}", self.name())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_orders() {
        for kind in INIT_ORDER {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            assert_eq!(Kind::from_proto("k", kind.proto() as i32).unwrap(), kind);
        }
        assert_eq!(Kind::from_code(4), None);
        let err = Kind::from_proto("singleton", 0).unwrap_err().to_string();
        assert!(err.contains("singleton"), "{err}");
        let mut reversed = PAUSE_ORDER;
        reversed.reverse();
        assert_eq!(reversed, RESUME_ORDER);
        assert_eq!(
            Kind::Diff.prerequisites(),
            &[Kind::Processor, Kind::Scheduler]
        );
    }
}
