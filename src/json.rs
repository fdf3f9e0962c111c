//! JSON rendering helpers used by the `serde::Serialize` derives on generated
//! types: timestamps as RFC 3339 strings, enum fields as their short names.

use prost_types::Timestamp;
use serde::Serializer;

/// Name lookups for generated protobuf enums (implemented by build.rs).
pub trait ProtoEnum {
    /// Upper-case prefix of every value name, e.g. `EVENT_TYPE_`.
    const PREFIX: &'static str;
    /// Full value name (`EVENT_TYPE_SESSION_CREATED`) of a number.
    fn name_of(value: i32) -> Option<&'static str>;
    /// Number of a full value name.
    fn value_of(name: &str) -> Option<i32>;
}

/// The short lower-case name of an enum value: `EVENT_TYPE_SESSION_CREATED`
/// is `session_created`. Unknown numbers render as the number.
pub fn short_name<E: ProtoEnum>(value: i32) -> String {
    match E::name_of(value) {
        Some(full) => full
            .strip_prefix(E::PREFIX)
            .unwrap_or(full)
            .to_ascii_lowercase(),
        None => value.to_string(),
    }
}

/// Parses a short (`session_created`) or full (`EVENT_TYPE_SESSION_CREATED`)
/// enum value name, case-insensitively.
pub fn parse_name<E: ProtoEnum>(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    E::value_of(&upper).or_else(|| E::value_of(&format!("{}{upper}", E::PREFIX)))
}

/// Serializes an enum field as its short name.
pub fn enum_value<E: ProtoEnum, S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&short_name::<E>(*value))
}

/// Serializes an optional enum field as its short name or null.
pub fn enum_opt<E: ProtoEnum, S: Serializer>(value: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_str(&short_name::<E>(*v)),
        None => s.serialize_none(),
    }
}

/// Serializes a repeated enum field as a list of short names.
pub fn enum_list<E: ProtoEnum, S: Serializer>(values: &[i32], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|v| short_name::<E>(*v)))
}

/// Serializes a timestamp as an RFC 3339 string.
pub fn timestamp<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(ts)
}

/// Serializes an optional timestamp as an RFC 3339 string or null.
pub fn timestamp_opt<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => s.collect_str(ts),
        None => s.serialize_none(),
    }
}
