//! Which shard programs this deployment watches: `SHARD_PROGRAM_IDS`
//! (`lifecycle.shard_program_ids`), else `[[lifecycle.shards]]`, else the
//! one `SHARD_PROGRAM_ID`. Every id is a base58 program id and every name
//! is unique, so either one can name a shard in filters and metrics.

use anyhow::bail;

use super::{Config, ShardConfig};

/// Most shard programs one deployment watches: each costs a monitor, two
/// websockets and a builder on its owner.
pub const MAX_SHARDS: usize = 64;

/// Longest shard name (a metric label value and a filter).
const MAX_NAME_LEN: usize = 64;

/// Where the list came from, for error messages.
const IDS_KEY: &str = "lifecycle.shard_program_ids (SHARD_PROGRAM_IDS)";
const TABLES_KEY: &str = "lifecycle.shards";

impl Config {
    /// The configured shard programs in order, names filled in; empty when
    /// none is configured (the embedded network then deploys its own).
    pub fn shard_list(&self) -> anyhow::Result<Vec<ShardConfig>> {
        let l = &self.lifecycle;
        let (list, key) = if !l.shard_program_ids.trim().is_empty() {
            (parse_ids(&l.shard_program_ids)?, IDS_KEY)
        } else if !l.shards.is_empty() {
            (l.shards.clone(), TABLES_KEY)
        } else if !l.shard_program_id.is_empty() {
            let one = ShardConfig {
                id: l.shard_program_id.clone(),
                name: String::new(),
            };
            (vec![one], "lifecycle.shard_program_id (SHARD_PROGRAM_ID)")
        } else {
            return Ok(Vec::new());
        };
        checked(list, key)
    }
}

/// `a,b` or `alpha=a,beta=b` (spaces around entries ignored).
fn parse_ids(text: &str) -> anyhow::Result<Vec<ShardConfig>> {
    let mut list = Vec::new();
    for entry in text.split(',').map(str::trim) {
        if entry.is_empty() {
            bail!("{IDS_KEY}: an empty entry in {text:?}; separate program ids with single commas");
        }
        let (name, id) = match entry.split_once('=') {
            Some((name, id)) => (name.trim(), id.trim()),
            None => ("", entry),
        };
        list.push(ShardConfig {
            id: id.to_string(),
            name: name.to_string(),
        });
    }
    Ok(list)
}

/// Validates ids and names, and names the unnamed after their id.
fn checked(list: Vec<ShardConfig>, key: &str) -> anyhow::Result<Vec<ShardConfig>> {
    if list.len() > MAX_SHARDS {
        bail!("{key}: {} shard programs; at most {MAX_SHARDS}", list.len());
    }
    let mut out: Vec<ShardConfig> = Vec::with_capacity(list.len());
    for (i, shard) in list.into_iter().enumerate() {
        crate::validate::pubkey(&format!("{key}[{i}].id"), &shard.id)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = if shard.name.is_empty() {
            shard.id.clone()
        } else {
            shard.name
        };
        check_name(key, i, &name)?;
        if let Some(twin) = out.iter().find(|o| o.id == shard.id || o.name == name) {
            bail!(
                "{key}[{i}]: shard {name:?} ({}) repeats shard {:?} ({}); ids and names must be unique",
                shard.id,
                twin.name,
                twin.id
            );
        }
        out.push(ShardConfig { id: shard.id, name });
    }
    Ok(out)
}

/// Names go into metric labels, URLs and logs: letters, digits, `-`, `_`, `.`.
fn check_name(key: &str, i: usize, name: &str) -> anyhow::Result<()> {
    let fine = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !fine {
        bail!(
            "{key}[{i}].name: invalid name {name:?}; 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "11111111111111111111111111111111";
    const B: &str = "SysvarC1ock11111111111111111111111111111111";

    fn with_ids(ids: &str) -> Config {
        let mut c = Config::default();
        c.lifecycle.shard_program_ids = ids.into();
        c
    }

    #[test]
    fn ids_and_named_ids_parse_and_unnamed_shards_take_their_id() {
        let list = with_ids(&format!("{A}, beta={B}")).shard_list().unwrap();
        assert_eq!(list[0].name, A);
        assert_eq!((list[1].name.as_str(), list[1].id.as_str()), ("beta", B));
    }

    #[test]
    fn bad_lists_name_the_key_and_the_entry() {
        for (ids, says) in [
            (format!("{A},,{B}"), "empty entry"),
            (format!("{A},{A}"), "unique"),
            (format!("x={A},x={B}"), "unique"),
            ("not-a-key".to_string(), "[0].id"),
            (format!("bad name={A}"), "[0].name"),
        ] {
            let e = with_ids(&ids).shard_list().unwrap_err().to_string();
            assert!(
                e.contains("SHARD_PROGRAM_IDS") && e.contains(says),
                "{ids}: {e}"
            );
        }
    }

    #[test]
    fn the_list_wins_over_tables_and_tables_over_the_single_id() {
        let mut c = Config::default();
        c.lifecycle.shard_program_id = A.into();
        assert_eq!(c.shard_list().unwrap()[0].id, A);
        c.lifecycle.shards = vec![ShardConfig {
            id: B.into(),
            name: "b".into(),
        }];
        assert_eq!(c.shard_list().unwrap()[0].name, "b");
        c.lifecycle.shard_program_ids = A.into();
        assert_eq!(c.shard_list().unwrap()[0].id, A);
    }
}
