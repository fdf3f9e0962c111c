//! Arguments and argument parsers shared by several commands.

use clap::Args;
use valence_lifecycle_api::json::{parse_name, short_name, ProtoEnum};

/// Paging flags shared by the list commands.
#[derive(Debug, Args)]
pub(crate) struct Page {
    /// Maximum items per page (server default 100; above 1000 is served as 1000).
    #[arg(long, value_name = "N")]
    page_size: Option<u32>,
    /// Token printed by the previous page, unchanged, with the same filters.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
}

impl Page {
    /// `(page_size, page_token)` as the requests take them; 0 asks for the
    /// server's default.
    pub(crate) fn parts(&self) -> (i32, String) {
        let size = self
            .page_size
            .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX));
        (size, self.page_token.clone().unwrap_or_default())
    }
}

/// Parses an enum value given by its short (`session_created`) or full
/// (`EVENT_TYPE_SESSION_CREATED`) name; the `_UNSPECIFIED` value is refused
/// because it means "not given". The error lists the accepted names, which
/// clap prints as a usage error.
pub(crate) fn enum_value<E: ProtoEnum>(text: &str) -> Result<i32, String> {
    match parse_name::<E>(text) {
        Some(value) if value != 0 => Ok(value),
        _ => Err(format!(
            "expected one of: {}",
            known_names::<E>().join(", ")
        )),
    }
}

/// Short names of every value of `E` but the unspecified one. Proto enums
/// have no iterator, so the (small) number range in use is probed.
pub(crate) fn known_names<E: ProtoEnum>() -> Vec<String> {
    (1..256)
        .filter(|value| E::name_of(*value).is_some())
        .map(short_name::<E>)
        .collect()
}

#[cfg(test)]
mod tests {
    use valence_lifecycle_api::v1;

    use super::*;

    #[test]
    fn enum_values_parse_by_short_or_full_name() {
        let created = v1::EventType::SessionCreated as i32;
        assert_eq!(enum_value::<v1::EventType>("session_created"), Ok(created));
        assert_eq!(
            enum_value::<v1::EventType>("EVENT_TYPE_SESSION_CREATED"),
            Ok(created)
        );
        let error = enum_value::<v1::SingletonKind>("unspecified").unwrap_err();
        assert_eq!(error, "expected one of: processor, scheduler, diff");
    }
}
