//! Input checks shared by the gRPC services and the REST gateway. Each
//! failure is an InvalidArgument naming the field.

use crate::error::{ApiError, ApiResult};

/// Default page size when the caller sends 0.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size accepted.
pub(crate) const MAX_PAGE_SIZE: u32 = 1000;

/// A base58 Solana public key (32 bytes).
pub(crate) fn pubkey(field: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    match bs58::decode(value).into_vec() {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        Ok(bytes) => Err(ApiError::invalid(
            field,
            format!(
                "{value:?} decodes to {} bytes, a public key has 32",
                bytes.len()
            ),
        )),
        Err(_) => Err(ApiError::invalid(field, format!("{value:?} is not base58"))),
    }
}

/// 64 hex characters (a sha256 hash); returns the bytes.
pub(crate) fn hash_hex(field: &str, value: &str) -> ApiResult<[u8; 32]> {
    let bytes = hex::decode(value)
        .map_err(|_| ApiError::invalid(field, format!("{value:?} is not hex")))?;
    bytes.try_into().map_err(|_| {
        ApiError::invalid(
            field,
            format!("{value:?} must be 64 hex characters (32 bytes)"),
        )
    })
}

/// A page size: negative is invalid, 0 means the default, capped at the maximum.
pub(crate) fn page_size(field: &str, value: i32) -> ApiResult<u32> {
    match value {
        v if v < 0 => Err(ApiError::invalid(field, format!("{v} is negative"))),
        0 => Ok(DEFAULT_PAGE_SIZE),
        v => Ok((v as u32).min(MAX_PAGE_SIZE)),
    }
}

/// A page token: the offset the previous page ended at, as decimal text.
/// Offsets past the stores' 64-bit signed range were never issued.
pub(crate) fn page_token(value: &str) -> ApiResult<u64> {
    if value.is_empty() {
        return Ok(0);
    }
    value
        .parse::<u64>()
        .ok()
        .filter(|offset| i64::try_from(*offset).is_ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "page_token",
                format!("{value:?} is not a token this server issued"),
            )
        })
}

/// A sequence number the log can hold (the stores keep 64-bit signed
/// integers).
pub(crate) fn sequence(field: &str, value: u64) -> ApiResult<u64> {
    if i64::try_from(value).is_err() {
        return Err(ApiError::invalid(
            field,
            format!("{value} is above the largest sequence, {}", i64::MAX),
        ));
    }
    Ok(value)
}

/// Free text sent to the store: no NUL character (PostgreSQL text cannot
/// hold one, and no name of ours contains it).
pub(crate) fn text(field: &str, value: &str) -> ApiResult<()> {
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain a NUL character"));
    }
    Ok(())
}

/// The token of the page after `offset + returned`, or empty when the page was short.
pub(crate) fn next_page_token(offset: u64, requested: u32, returned: usize) -> String {
    if returned < requested as usize {
        String::new()
    } else {
        (offset + returned as u64).to_string()
    }
}

/// A non-empty identifier of at most `max` characters of `[A-Za-z0-9._-]`.
pub(crate) fn identifier(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(ApiError::invalid(
            field,
            format!("{value:?} may only contain letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubkeys_must_be_32_bytes_of_base58() {
        assert!(pubkey("owner", "11111111111111111111111111111111").is_ok());
        let err = pubkey("owner", "not-a-key!").unwrap_err().to_string();
        assert!(err.contains("owner") && err.contains("base58"), "{err}");
        let err = pubkey("owner", "abc").unwrap_err().to_string();
        assert!(err.contains("32"), "{err}");
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size("page_size", 0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size("page_size", 5000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size("page_size", -1)
            .unwrap_err()
            .to_string()
            .contains("page_size"));
    }

    #[test]
    fn page_tokens_stay_within_the_stores_range() {
        assert_eq!(page_token("").unwrap(), 0);
        assert_eq!(page_token("9223372036854775807").unwrap(), i64::MAX as u64);
        for bad in ["9223372036854775808", "18446744073709551615", "-1", "x"] {
            let err = page_token(bad).unwrap_err().to_string();
            assert!(err.contains("page_token"), "{bad}: {err}");
        }
        assert!(sequence("after_sequence", u64::MAX).is_err());
        assert!(text("namespace", "a\0b")
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }

    #[test]
    fn hashes_are_64_hex() {
        assert!(hash_hex("h", &"ab".repeat(32)).is_ok());
        assert!(hash_hex("h", "abcd")
            .unwrap_err()
            .to_string()
            .contains("64 hex"));
        assert!(hash_hex("h", "zz")
            .unwrap_err()
            .to_string()
            .contains("not hex"));
    }
}
