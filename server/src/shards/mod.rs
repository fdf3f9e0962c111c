//! Several shard programs (issue 19): which programs this deployment
//! watches, and how replicas sharing one database split their chain work.
//!
//! Each shard's chain work (its monitor and its builder) runs on the one
//! replica holding the shard's lease (see [`leases`]); every row and event
//! that work writes carries the shard's program id, and every write is
//! fenced by the lease's epoch. Work of no shard (the orchestrator,
//! retention, singleton administration) stays with the leader.
//!
//! SQLite is one process: it takes every lease itself.

mod balance;
pub(crate) mod leases;

use solana_sdk::pubkey::Pubkey;

use crate::{
    chain::pubsub::Feed,
    components::names,
    config::ShardConfig,
    error::{ApiError, ApiResult},
};

/// One shard program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    /// Its program id.
    pub(crate) program: Pubkey,
    /// The program id in base58: the `shard` of its rows and events.
    pub(crate) id: String,
    /// Its configured name (the id when none is configured).
    pub(crate) name: String,
}

/// The configured shard programs, in configuration order.
#[derive(Debug, Clone)]
pub(crate) struct ShardSet {
    shards: Vec<Shard>,
}

impl ShardSet {
    /// From the validated configuration (`Config::shard_list`), or the one
    /// program the embedded network deployed when none is configured.
    pub(crate) fn new(list: &[ShardConfig], fallback: Option<Pubkey>) -> anyhow::Result<ShardSet> {
        let mut shards = Vec::with_capacity(list.len().max(1));
        for entry in list {
            let program: Pubkey = entry
                .id
                .parse()
                .map_err(|e| anyhow::anyhow!("shard program {:?}: {e}", entry.id))?;
            shards.push(Shard {
                program,
                id: entry.id.clone(),
                name: entry.name.clone(),
            });
        }
        if shards.is_empty() {
            if let Some(program) = fallback {
                shards.push(Shard {
                    program,
                    id: program.to_string(),
                    name: program.to_string(),
                });
            }
        }
        Ok(ShardSet { shards })
    }

    /// Every shard, in configuration order.
    pub(crate) fn all(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard of program id `id`.
    pub(crate) fn by_id(&self, id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The shard a request names by program id or name; `None` for an
    /// empty value (every shard). Unknown names are INVALID_ARGUMENT naming
    /// `field` and the configured shards.
    pub(crate) fn resolve(&self, field: &str, value: &str) -> ApiResult<Option<&Shard>> {
        if value.is_empty() {
            return Ok(None);
        }
        if let Some(shard) = self
            .shards
            .iter()
            .find(|s| s.id == value || s.name == value)
        {
            return Ok(Some(shard));
        }
        let shown: String = value.chars().take(64).collect();
        if self.shards.is_empty() {
            return Err(ApiError::invalid(
                field,
                format!("no shard program {shown:?}: this server watches no chain, so no shard"),
            ));
        }
        let known: Vec<&str> = self.shards.iter().map(|s| s.name.as_str()).collect();
        Err(ApiError::invalid(
            field,
            format!(
                "no shard program {shown:?} is configured; name one by program id or name: {}",
                known.join(", ")
            ),
        ))
    }

    /// [`Self::resolve`] to the program id a filter matches.
    pub(crate) fn filter(&self, field: &str, value: &str) -> ApiResult<Option<String>> {
        Ok(self.resolve(field, value)?.map(|s| s.id.clone()))
    }

    /// Whether there is more than one shard (then per-shard components
    /// carry the shard's name).
    pub(crate) fn several(&self) -> bool {
        self.shards.len() > 1
    }

    /// The names of `shard`'s components on the status board.
    pub(crate) fn component_names(&self, shard: &Shard) -> ComponentNames {
        ComponentNames {
            suffix: if self.several() {
                format!(":{}", shard.name)
            } else {
                String::new()
            },
        }
    }
}

/// How one shard's components are called on the status board, in /health
/// and in component events: `monitor`, `builder` and the websocket feeds as
/// ever with one shard; `monitor:<name>` and so on with several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComponentNames {
    suffix: String,
}

impl ComponentNames {
    /// The monitor.
    pub(crate) fn monitor(&self) -> String {
        format!("{}{}", names::MONITOR, self.suffix)
    }

    /// The builder.
    pub(crate) fn builder(&self) -> String {
        format!("{}{}", names::BUILDER, self.suffix)
    }

    /// A websocket feed.
    pub(crate) fn feed(&self, feed: Feed) -> String {
        format!("{}{}", feed.component(), self.suffix)
    }

    /// The health of reading the program's transaction logs.
    pub(crate) fn chain_logs(&self) -> String {
        format!("{}{}", crate::monitor::CHAIN_LOGS, self.suffix)
    }

    /// Every name the shard's work puts on the board.
    pub(crate) fn all(&self) -> Vec<String> {
        let mut all = vec![self.monitor(), self.builder(), self.chain_logs()];
        all.extend(Feed::ALL.map(|f| self.feed(f)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> ShardSet {
        let list: Vec<ShardConfig> = (0..n)
            .map(|i| ShardConfig {
                id: Pubkey::new_unique().to_string(),
                name: format!("s{i}"),
            })
            .collect();
        ShardSet::new(&list, None).unwrap()
    }

    #[test]
    fn a_shard_is_found_by_id_or_name_and_an_unknown_one_is_refused_naming_the_field() {
        let shards = set(2);
        let second = shards.all()[1].clone();
        assert_eq!(shards.resolve("shard", "s1").unwrap(), Some(&second));
        assert_eq!(shards.resolve("shard", &second.id).unwrap(), Some(&second));
        assert_eq!(shards.resolve("shard", "").unwrap(), None);
        let e = shards.resolve("shard", "nope\0").unwrap_err();
        assert!(e.to_string().contains("shard"), "{e}");
        assert!(e.to_string().contains("s0, s1"), "{e}");
    }

    #[test]
    fn components_keep_their_names_with_one_shard_and_carry_the_name_with_several() {
        let one = set(1);
        assert_eq!(one.component_names(&one.all()[0]).monitor(), "monitor");
        let two = set(2);
        let names = two.component_names(&two.all()[1]);
        assert_eq!(names.builder(), "builder:s1");
        assert_eq!(names.feed(Feed::Logs), "chain-logs-ws:s1");
    }
}
