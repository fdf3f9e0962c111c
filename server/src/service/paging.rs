//! Paging (AIP-158): page sizes and opaque keyset page tokens.
//!
//! A token is the last key of the page it follows, so the next page starts
//! after that row whatever was written meanwhile (an offset counted the
//! rows inserted in front of it and repeated one). It also carries a digest
//! of the list and the filter it was issued for, so replaying it against
//! another list or filter is refused instead of starting at an unrelated
//! place. Layout, before URL-safe base64 without padding (safe in a query
//! string as is):
//!
//! ```text
//! [version = 1] [8 bytes: sha256(list, filter values)] [key]
//! key = [created_at_ms: i64 big-endian] [id: UTF-8]   (newest-first lists)
//!     | [id: UTF-8]                                   (rules, by id)
//! ```
//!
//! Tokens are not signed: a hand-made one can only choose where a list
//! starts, which any caller can already do with the filters. The version
//! byte lets a later layout refuse (or read) today's tokens.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use sha2::{Digest as _, Sha256};

use crate::{
    error::{ApiError, ApiResult},
    store::CreatedKey,
    validate,
};

/// First byte of every token issued today.
const VERSION: u8 = 1;
/// Bytes of the list and filter digest a token carries.
const DIGEST_LEN: usize = 8;
/// Longest id a key may hold (rule ids are at most 128 characters; the
/// other lists' ids are base58 public keys).
const MAX_ID_BYTES: usize = 128;
/// Longest token read: more than the longest issued ((1 + 8 + 8 + 128)
/// bytes make 194 characters), so anything longer is refused undecoded.
const MAX_TOKEN_CHARS: usize = 256;

/// A page of a list and the token of the next one (empty on the last page).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page<T> {
    /// The records of this page.
    pub items: Vec<T>,
    /// Where the next page starts; empty when this page is the last.
    pub next_page_token: String,
}

/// What the caller asked for in a list call: a page size (0 = default) and
/// the token of the previous answer (empty = first page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PageParams {
    /// Records per page; 0 means the default, larger than the maximum is
    /// treated as the maximum.
    pub page_size: i32,
    /// `next_page_token` of the previous page, or empty.
    pub page_token: String,
}

/// The list and filter a token is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listing {
    digest: [u8; DIGEST_LEN],
}

impl Listing {
    /// `list` (the RPC's name) under the filter `values`, given in a fixed
    /// order with "" for a filter not set (so REST and gRPC calls with the
    /// same filter share tokens).
    pub(crate) fn new(list: &str, values: &[&str]) -> Listing {
        let mut hasher = Sha256::new();
        hasher.update(b"valence.lifecycle.v1 page token\0");
        // Length-prefixed, so no two filters hash the same input.
        for part in std::iter::once(list).chain(values.iter().copied()) {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let mut digest = [0; DIGEST_LEN];
        digest.copy_from_slice(&hasher.finalize()[..DIGEST_LEN]);
        Listing { digest }
    }
}

/// A key a page token can carry: the sort key of a list's rows.
pub(crate) trait CursorKey: Sized {
    /// Appends the key's bytes.
    fn write(&self, out: &mut Vec<u8>);
    /// The key in `bytes` (all of them), None when they hold none.
    fn read(bytes: &[u8]) -> Option<Self>;
}

impl CursorKey for CreatedKey {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (time, id) = bytes.split_first_chunk::<8>()?;
        Some(CreatedKey {
            created_at_ms: i64::from_be_bytes(*time),
            id: id_text(id)?,
        })
    }
}

/// A rule id (rules are listed by id).
impl CursorKey for String {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        id_text(bytes)
    }
}

/// An id as a key holds it: 1 to 128 bytes of UTF-8 without NUL
/// (PostgreSQL text cannot hold one, and no id contains it).
fn id_text(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() || bytes.len() > MAX_ID_BYTES || bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes.to_vec()).ok()
}

/// The token of the page after the row at `key`.
pub(crate) fn encode<K: CursorKey>(listing: Listing, key: &K) -> String {
    let mut bytes = Vec::with_capacity(1 + DIGEST_LEN + 8 + MAX_ID_BYTES);
    bytes.push(VERSION);
    bytes.extend_from_slice(&listing.digest);
    key.write(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key `token` carries, if this server issued it for `listing`; ""
/// (the first page) is None.
pub(crate) fn decode<K: CursorKey>(listing: Listing, token: &str) -> ApiResult<Option<K>> {
    if token.is_empty() {
        return Ok(None);
    }
    let not_issued = || {
        ApiError::invalid(
            "page_token",
            "is not a page token this server issued; send a next_page_token unchanged, \
             or none for the first page",
        )
    };
    if token.len() > MAX_TOKEN_CHARS {
        return Err(not_issued());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| not_issued())?;
    let (&version, rest) = bytes.split_first().ok_or_else(not_issued)?;
    if version != VERSION {
        return Err(not_issued());
    }
    let (digest, key) = rest
        .split_first_chunk::<DIGEST_LEN>()
        .ok_or_else(not_issued)?;
    if *digest != listing.digest {
        return Err(ApiError::invalid(
            "page_token",
            "was issued for another list or filter; send the filter of the first page \
             with it, or no token to start over",
        ));
    }
    K::read(key).map(Some).ok_or_else(not_issued)
}

/// A checked page request: how many rows, after which key, of which
/// listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageRequest<K> {
    /// Rows per page (1 to the maximum).
    pub(crate) limit: u32,
    /// Where the page starts: after this key; None for the first page.
    pub(crate) after: Option<K>,
    listing: Listing,
}

impl<K: CursorKey> PageRequest<K> {
    /// Checks `page_size` (0 means the default, above the maximum means
    /// the maximum) and `page_token` (issued for `listing`).
    pub(crate) fn parse(page: &PageParams, listing: Listing) -> ApiResult<Self> {
        Ok(PageRequest {
            limit: validate::page_size("page_size", page.page_size)?,
            after: decode(listing, &page.page_token)?,
            listing,
        })
    }

    /// How many rows to fetch: one more than the page, to tell whether
    /// another page follows (so the last page has no token).
    pub(crate) fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// The page of `rows` (fetched with [`Self::fetch`]), keyed by `key`.
    pub(crate) fn page<T>(self, mut rows: Vec<T>, key: impl FnOnce(&T) -> K) -> Page<T> {
        let mut next_page_token = String::new();
        if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            if let Some(last) = rows.last() {
                next_page_token = encode(self.listing, &key(last));
            }
        }
        Page {
            items: rows,
            next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ms: i64, id: &str) -> CreatedKey {
        CreatedKey {
            created_at_ms: ms,
            id: id.into(),
        }
    }

    #[test]
    fn issued_tokens_read_back_for_their_listing_only() {
        let accounts = Listing::new("ListAccounts", &[""]);
        let token = encode(accounts, &key(-5, "abc"));
        assert!(token.starts_with('A'), "never looks like a flag: {token}");
        assert_eq!(decode(accounts, &token).unwrap(), Some(key(-5, "abc")));
        assert_eq!(decode::<CreatedKey>(accounts, "").unwrap(), None);
        for other in [
            Listing::new("ListAccounts", &["owner"]),
            Listing::new("ListSessions", &[""]),
            Listing::new("ListAccounts", &[]),
        ] {
            let err = decode::<CreatedKey>(other, &token).unwrap_err().to_string();
            assert!(
                err.contains("page_token") && err.contains("filter"),
                "{err}"
            );
        }
        let longest = encode(accounts, &key(i64::MIN, &"x".repeat(MAX_ID_BYTES)));
        assert!(longest.len() <= MAX_TOKEN_CHARS, "{}", longest.len());
        assert!(decode::<CreatedKey>(accounts, &longest).is_ok());
    }

    #[test]
    fn filters_are_length_prefixed() {
        assert_ne!(
            Listing::new("ListSessions", &["ab", "c"]),
            Listing::new("ListSessions", &["a", "bc"])
        );
    }

    #[test]
    fn garbage_is_refused_naming_the_field() {
        let accounts = Listing::new("ListAccounts", &[""]);
        let valid = encode(accounts, &key(1, "abc"));
        let mut wrong_version = URL_SAFE_NO_PAD.decode(&valid).unwrap();
        wrong_version[0] = 2;
        let digest_only = URL_SAFE_NO_PAD.encode(&URL_SAFE_NO_PAD.decode(&valid).unwrap()[..9]);
        let mut nul = URL_SAFE_NO_PAD.decode(&valid).unwrap();
        nul.push(0);
        for bad in [
            "abc".to_string(),
            "18446744073709551615".into(),
            "0".into(),
            "-1".into(),
            "x".repeat(10_000),
            format!("{valid}="),
            format!("{valid}A"),
            valid.replace('A', "+"),
            URL_SAFE_NO_PAD.encode(wrong_version),
            digest_only,
            URL_SAFE_NO_PAD.encode(nul),
        ] {
            let err = decode::<CreatedKey>(accounts, &bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("page_token"), "{bad}: {err}");
            assert!(
                err.len() < 200,
                "the message does not echo the token: {err}"
            );
        }
    }

    #[test]
    fn only_a_full_page_and_more_has_a_next_token() {
        let listing = Listing::new("ListRules", &["false"]);
        let request = |size| {
            PageRequest::<String>::parse(
                &PageParams {
                    page_size: size,
                    page_token: String::new(),
                },
                listing,
            )
            .unwrap()
        };
        let ids = |n: usize| (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>();
        assert_eq!(request(2).fetch(), 3);
        let page = request(2).page(ids(2), Clone::clone);
        assert!(page.next_page_token.is_empty(), "exactly a page: the last");
        let page = request(2).page(ids(3), Clone::clone);
        assert_eq!(page.items, ids(2));
        assert_eq!(
            decode::<String>(listing, &page.next_page_token).unwrap(),
            Some("r1".into())
        );
        assert_eq!(request(5000).limit, validate::MAX_PAGE_SIZE, "clamped");
        assert_eq!(request(0).limit, validate::DEFAULT_PAGE_SIZE);
    }
}
