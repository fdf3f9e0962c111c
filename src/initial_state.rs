//! The initial state of a new account and its hash: the contract between a
//! client that requests an account (and states the hash it expects) and the
//! builder that initializes it.
//!
//! ```text
//! InitialState {
//!     version:      u8                        = 1
//!     capabilities: Vec<String>               in the order requested
//!     balances:     BTreeMap<String, u64>     "transfer" -> {"native": 0}
//!     metadata:     BTreeMap<String, Vec<u8>> "mint" -> {"mint_authority": []},
//!                                             "admin" -> {"admin_keys": []}
//! }
//! ```
//!
//! Encoded with borsh: u8 as one byte, u64 little-endian, a string or byte
//! vector as a u32 little-endian length then the bytes, a vector as a u32
//! count then its items, a map as a u32 count then its entries sorted by key
//! (byte order). Capabilities other than the three above stay in the list
//! and add nothing. The state hash is sha256 of those bytes, written as 64
//! lowercase hex characters.
//!
//! Seed 000 hashed a bincode blob of `HashMap`s, whose iteration order
//! changes from run to run; sorted maps make the same request hash the same
//! everywhere.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// Version byte of the encoding above.
pub const VERSION: u8 = 1;

/// The initial state of an account, derived from its capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialState {
    /// Encoding version ([`VERSION`]).
    pub version: u8,
    /// Capabilities, in the order requested.
    pub capabilities: Vec<String>,
    /// Balances by asset.
    pub balances: BTreeMap<String, u64>,
    /// Metadata entries.
    pub metadata: BTreeMap<String, Vec<u8>>,
}

impl InitialState {
    /// The state an account with `capabilities` starts in.
    pub fn for_capabilities(capabilities: &[String]) -> InitialState {
        let mut balances = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for capability in capabilities {
            match capability.as_str() {
                "transfer" => {
                    balances.insert("native".to_string(), 0);
                }
                "mint" => {
                    metadata.insert("mint_authority".to_string(), Vec::new());
                }
                "admin" => {
                    metadata.insert("admin_keys".to_string(), Vec::new());
                }
                _ => {}
            }
        }
        InitialState {
            version: VERSION,
            capabilities: capabilities.to_vec(),
            balances,
            metadata,
        }
    }

    /// The borsh encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.version];
        put_len(&mut out, self.capabilities.len());
        for capability in &self.capabilities {
            put_bytes(&mut out, capability.as_bytes());
        }
        put_len(&mut out, self.balances.len());
        for (asset, amount) in &self.balances {
            put_bytes(&mut out, asset.as_bytes());
            out.extend_from_slice(&amount.to_le_bytes());
        }
        put_len(&mut out, self.metadata.len());
        for (key, value) in &self.metadata {
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, value);
        }
        out
    }

    /// sha256 of the encoding.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// sha256 of the encoding, as 64 lowercase hex characters.
    pub fn hash_hex(&self) -> String {
        self.hash().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The state hash (hex) an account with `capabilities` starts with.
pub fn state_hash_hex(capabilities: &[String]) -> String {
    InitialState::for_capabilities(capabilities).hash_hex()
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Lengths beyond u32 cannot occur: requests are bounded far below.
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn encoding_is_the_documented_borsh_layout() {
        let state = InitialState::for_capabilities(&caps(&["transfer", "admin", "custom"]));
        let mut expected = vec![1u8];
        expected.extend([3, 0, 0, 0]);
        for c in ["transfer", "admin", "custom"] {
            expected.extend((c.len() as u32).to_le_bytes());
            expected.extend(c.as_bytes());
        }
        expected.extend([1, 0, 0, 0, 6, 0, 0, 0]);
        expected.extend(b"native");
        expected.extend([0u8; 8]);
        expected.extend([1, 0, 0, 0, 10, 0, 0, 0]);
        expected.extend(b"admin_keys");
        expected.extend([0, 0, 0, 0]);
        assert_eq!(state.encode(), expected);
    }

    #[test]
    fn maps_are_sorted_whatever_the_capability_order() {
        let a = InitialState::for_capabilities(&caps(&["mint", "admin"]));
        let b = InitialState::for_capabilities(&caps(&["admin", "mint"]));
        // Same maps (sorted: admin_keys before mint_authority) ...
        assert_eq!(a.metadata, b.metadata);
        let keys: Vec<_> = a.metadata.keys().cloned().collect();
        assert_eq!(keys, ["admin_keys", "mint_authority"]);
        // ... but the capability list keeps the requested order.
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn golden_hashes() {
        // Computed independently with Python:
        //   hashlib.sha256(bytes([1, 0,0,0,0, 0,0,0,0, 0,0,0,0])).hexdigest()
        assert_eq!(
            state_hash_hex(&[]),
            "8150a65e854b9bbbd52eefd048eb025c76fe48f0475c0f942c9db9eda40a94c3"
        );
        // d = bytes([1]) + u32(1) + s(b"transfer") + u32(1) + s(b"native") + u64(0) + u32(0)
        assert_eq!(
            state_hash_hex(&caps(&["transfer"])),
            "65dbd49c1790e3ece5f116d65671be597a5e14fcb7028211d85a78582e8b67a0"
        );
    }
}
