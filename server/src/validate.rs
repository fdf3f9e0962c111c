//! Input checks shared by the gRPC services and the REST gateway. Each
//! failure is an InvalidArgument naming the field.

use crate::error::{ApiError, ApiResult};

/// Default page size when the caller sends 0.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size served; larger requests get this many.
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

/// A page size: negative is invalid, 0 means the default, and a size
/// above the maximum is treated as the maximum (AIP-158 coerces rather
/// than refuses; the proto comments say so).
pub(crate) fn page_size(field: &str, value: i32) -> ApiResult<u32> {
    match value {
        v if v < 0 => Err(ApiError::invalid(field, format!("{v} is negative"))),
        0 => Ok(DEFAULT_PAGE_SIZE),
        v => Ok((v as u32).min(MAX_PAGE_SIZE)),
    }
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
    fn sequences_and_text_stay_within_the_stores_range() {
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
