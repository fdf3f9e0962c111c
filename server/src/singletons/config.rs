//! Singleton configs: validation of what clients send, the partial-update
//! merge, the JSON kept in the store, and the borsh bytes sent as the
//! `config: Vec<u8>` argument of `initialize` / `update_config`.
//!
//! Borsh layouts (all integers little-endian, no padding):
//!
//! | kind | layout | bytes |
//! | --- | --- | --- |
//! | processor | `max_verification_functions: u32, max_compute_units: u64, pause_authority: Pubkey` | 44 |
//! | scheduler | `max_shards: u32, max_queue_size: u32, default_priority: u8` | 9 |
//! | diff | `max_batch_size: u32, optimization_level: u8` (0 none, 1 basic, 2 aggressive: the Anchor enum's variant index) | 5 |

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use valence_lifecycle_api::v1::{self, singleton_info, update_singleton_config_request::Update};

use super::kind::Kind;
use crate::{
    chain::codec::{base58, Key},
    error::{ApiError, ApiResult},
};

/// Highest scheduler `default_priority`.
pub const MAX_PRIORITY: u32 = 10;

/// Processor config (seed 002 `ProcessorConfig`).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ProcessorConfig {
    /// Maximum verification functions per execution.
    pub max_verification_functions: u32,
    /// Compute unit budget.
    pub max_compute_units: u64,
    /// Who may pause the processor.
    #[serde(with = "base58_key")]
    pub pause_authority: Key,
}

/// Scheduler config (seed 002 `SchedulerConfig`).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// Maximum shards scheduled.
    pub max_shards: u32,
    /// Maximum queue length (> 0).
    pub max_queue_size: u32,
    /// Default priority (0 to [`MAX_PRIORITY`]).
    pub default_priority: u8,
}

/// Diff optimization level; borsh writes the variant index (Anchor enums).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    /// No optimization.
    None,
    /// Cheap optimizations only.
    Basic,
    /// All optimizations.
    Aggressive,
}

/// Diff config (seed 002 `DiffConfig`).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DiffConfig {
    /// Maximum diffs per batch (> 0).
    pub max_batch_size: u32,
    /// Optimization level.
    pub optimization_level: OptimizationLevel,
}

/// The config of one singleton.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SingletonConfig {
    /// Processor.
    Processor(ProcessorConfig),
    /// Scheduler.
    Scheduler(SchedulerConfig),
    /// Diff.
    Diff(DiffConfig),
}

mod base58_key {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::chain::codec::Key;

    pub(super) fn serialize<S: Serializer>(key: &Key, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::base58(key))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = bs58::decode(&text).into_vec().map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom("a public key has 32 bytes"))
    }
}

impl OptimizationLevel {
    fn from_proto(field: &str, value: i32) -> ApiResult<OptimizationLevel> {
        match v1::OptimizationLevel::try_from(value) {
            Ok(v1::OptimizationLevel::None) => Ok(OptimizationLevel::None),
            Ok(v1::OptimizationLevel::Basic) => Ok(OptimizationLevel::Basic),
            Ok(v1::OptimizationLevel::Aggressive) => Ok(OptimizationLevel::Aggressive),
            _ => Err(ApiError::invalid(
                field,
                format!("{value} is not an optimization level: give none, basic or aggressive"),
            )),
        }
    }

    fn proto(self) -> v1::OptimizationLevel {
        match self {
            OptimizationLevel::None => v1::OptimizationLevel::None,
            OptimizationLevel::Basic => v1::OptimizationLevel::Basic,
            OptimizationLevel::Aggressive => v1::OptimizationLevel::Aggressive,
        }
    }
}

/// A base58 key from a request; InvalidArgument naming `field` otherwise.
fn key(field: &str, value: &str) -> ApiResult<Key> {
    crate::validate::pubkey(field, value)?;
    let bytes = bs58::decode(value)
        .into_vec()
        .map_err(|_| ApiError::invalid(field, "not base58"))?;
    bytes
        .try_into()
        .map_err(|_| ApiError::invalid(field, "a public key has 32 bytes"))
}

fn positive(field: &str, value: u32) -> ApiResult<u32> {
    if value == 0 {
        return Err(ApiError::invalid(field, "must be greater than 0"));
    }
    Ok(value)
}

fn priority(field: &str, value: u32) -> ApiResult<u8> {
    if value > MAX_PRIORITY {
        return Err(ApiError::invalid(
            field,
            format!("{value} is out of range 0-{MAX_PRIORITY}"),
        ));
    }
    Ok(value as u8)
}

impl SingletonConfig {
    /// Which singleton this config is for.
    pub fn kind(&self) -> Kind {
        match self {
            SingletonConfig::Processor(_) => Kind::Processor,
            SingletonConfig::Scheduler(_) => Kind::Scheduler,
            SingletonConfig::Diff(_) => Kind::Diff,
        }
    }

    /// A processor config from a request. An empty `pause_authority` means
    /// the singleton authority.
    pub fn processor(c: &v1::ProcessorConfig, authority: &Key) -> ApiResult<SingletonConfig> {
        let pause_authority = if c.pause_authority.is_empty() {
            *authority
        } else {
            key("processor.pause_authority", &c.pause_authority)?
        };
        Ok(SingletonConfig::Processor(ProcessorConfig {
            max_verification_functions: c.max_verification_functions,
            max_compute_units: c.max_compute_units,
            pause_authority,
        }))
    }

    /// A scheduler config from a request.
    pub fn scheduler(c: &v1::SchedulerConfig) -> ApiResult<SingletonConfig> {
        Ok(SingletonConfig::Scheduler(SchedulerConfig {
            max_shards: c.max_shards,
            max_queue_size: positive("scheduler.max_queue_size", c.max_queue_size)?,
            default_priority: priority("scheduler.default_priority", c.default_priority)?,
        }))
    }

    /// A diff config from a request.
    pub fn diff(c: &v1::DiffConfig) -> ApiResult<SingletonConfig> {
        Ok(SingletonConfig::Diff(DiffConfig {
            max_batch_size: positive("diff.max_batch_size", c.max_batch_size)?,
            optimization_level: OptimizationLevel::from_proto(
                "diff.optimization_level",
                c.optimization_level,
            )?,
        }))
    }

    /// This config with the fields of `update` that are set replaced, each
    /// validated like at initialization. `update` must be for this kind.
    pub fn merged(&self, update: &Update) -> ApiResult<SingletonConfig> {
        match (self, update) {
            (SingletonConfig::Processor(c), Update::Processor(u)) => {
                let mut next = c.clone();
                if let Some(v) = u.max_verification_functions {
                    next.max_verification_functions = v;
                }
                if let Some(v) = u.max_compute_units {
                    next.max_compute_units = v;
                }
                if let Some(v) = &u.pause_authority {
                    next.pause_authority = key("processor.pause_authority", v)?;
                }
                Ok(SingletonConfig::Processor(next))
            }
            (SingletonConfig::Scheduler(c), Update::Scheduler(u)) => {
                let mut next = c.clone();
                if let Some(v) = u.max_shards {
                    next.max_shards = v;
                }
                if let Some(v) = u.max_queue_size {
                    next.max_queue_size = positive("scheduler.max_queue_size", v)?;
                }
                if let Some(v) = u.default_priority {
                    next.default_priority = priority("scheduler.default_priority", v)?;
                }
                Ok(SingletonConfig::Scheduler(next))
            }
            (SingletonConfig::Diff(c), Update::Diff(u)) => {
                let mut next = c.clone();
                if let Some(v) = u.max_batch_size {
                    next.max_batch_size = positive("diff.max_batch_size", v)?;
                }
                if let Some(v) = u.optimization_level {
                    next.optimization_level =
                        OptimizationLevel::from_proto("diff.optimization_level", v)?;
                }
                Ok(SingletonConfig::Diff(next))
            }
            _ => Err(ApiError::invalid(
                "update",
                format!("the update is not for {}", self.kind()),
            )),
        }
    }

    /// The borsh bytes of the `config` instruction argument (layouts above).
    pub fn encode(&self) -> Vec<u8> {
        let written = match self {
            SingletonConfig::Processor(c) => borsh::to_vec(c),
            SingletonConfig::Scheduler(c) => borsh::to_vec(c),
            SingletonConfig::Diff(c) => borsh::to_vec(c),
        };
        written.expect("writing to a Vec cannot fail")
    }

    /// Decodes the config bytes of a `kind` singleton (as read from chain).
    pub fn decode(kind: Kind, bytes: &[u8]) -> anyhow::Result<SingletonConfig> {
        Ok(match kind {
            Kind::Processor => SingletonConfig::Processor(borsh::from_slice(bytes)?),
            Kind::Scheduler => SingletonConfig::Scheduler(borsh::from_slice(bytes)?),
            Kind::Diff => SingletonConfig::Diff(borsh::from_slice(bytes)?),
        })
    }

    /// JSON text, as stored and shown in the version history.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("configs serialize")
    }

    /// Parses stored JSON of a `kind` singleton.
    pub fn from_json(kind: Kind, text: &str) -> anyhow::Result<SingletonConfig> {
        Ok(match kind {
            Kind::Processor => SingletonConfig::Processor(serde_json::from_str(text)?),
            Kind::Scheduler => SingletonConfig::Scheduler(serde_json::from_str(text)?),
            Kind::Diff => SingletonConfig::Diff(serde_json::from_str(text)?),
        })
    }

    /// The config as the `SingletonInfo.config` oneof.
    pub fn proto(&self) -> singleton_info::Config {
        match self {
            SingletonConfig::Processor(c) => {
                singleton_info::Config::Processor(v1::ProcessorConfig {
                    max_verification_functions: c.max_verification_functions,
                    max_compute_units: c.max_compute_units,
                    pause_authority: base58(&c.pause_authority),
                })
            }
            SingletonConfig::Scheduler(c) => {
                singleton_info::Config::Scheduler(v1::SchedulerConfig {
                    max_shards: c.max_shards,
                    max_queue_size: c.max_queue_size,
                    default_priority: u32::from(c.default_priority),
                })
            }
            SingletonConfig::Diff(c) => singleton_info::Config::Diff(v1::DiffConfig {
                max_batch_size: c.max_batch_size,
                optimization_level: c.optimization_level.proto() as i32,
            }),
        }
    }
}

/// A valid config of `kind`, to validate an update's fields before the
/// real config is read from chain.
pub fn placeholder(kind: Kind) -> SingletonConfig {
    match kind {
        Kind::Processor => SingletonConfig::Processor(ProcessorConfig {
            max_verification_functions: 1,
            max_compute_units: 1,
            pause_authority: [0; 32],
        }),
        Kind::Scheduler => SingletonConfig::Scheduler(SchedulerConfig {
            max_shards: 1,
            max_queue_size: 1,
            default_priority: 0,
        }),
        Kind::Diff => SingletonConfig::Diff(DiffConfig {
            max_batch_size: 1,
            optimization_level: OptimizationLevel::None,
        }),
    }
}

/// The singleton an update is for.
pub fn update_kind(update: &Update) -> Kind {
    match update {
        Update::Processor(_) => Kind::Processor,
        Update::Scheduler(_) => Kind::Scheduler,
        Update::Diff(_) => Kind::Diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(n: u32) -> Vec<u8> {
        n.to_le_bytes().to_vec()
    }

    #[test]
    fn borsh_layouts_golden_vectors() {
        let processor = SingletonConfig::Processor(ProcessorConfig {
            max_verification_functions: 10,
            max_compute_units: 1_000_000,
            pause_authority: [7; 32],
        });
        let mut expected = le32(10);
        expected.extend(1_000_000u64.to_le_bytes());
        expected.extend([7; 32]);
        assert_eq!(processor.encode(), expected);
        assert_eq!(expected.len(), 44);
        assert_eq!(
            SingletonConfig::decode(Kind::Processor, &expected).unwrap(),
            processor
        );

        let scheduler = SingletonConfig::Scheduler(SchedulerConfig {
            max_shards: 100,
            max_queue_size: 1000,
            default_priority: 5,
        });
        assert_eq!(hex::encode(scheduler.encode()), "64000000e803000005");

        let diff = SingletonConfig::Diff(DiffConfig {
            max_batch_size: 50,
            optimization_level: OptimizationLevel::Aggressive,
        });
        assert_eq!(hex::encode(diff.encode()), "3200000002");
        assert_eq!(
            SingletonConfig::decode(Kind::Diff, &diff.encode()).unwrap(),
            diff
        );
        assert!(SingletonConfig::decode(Kind::Diff, &[50, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                SingletonConfig::scheduler(&v1::SchedulerConfig {
                    max_shards: 1,
                    max_queue_size: 0,
                    default_priority: 1,
                }),
                "scheduler.max_queue_size",
            ),
            (
                SingletonConfig::scheduler(&v1::SchedulerConfig {
                    max_shards: 1,
                    max_queue_size: 1,
                    default_priority: 11,
                }),
                "scheduler.default_priority",
            ),
            (
                SingletonConfig::diff(&v1::DiffConfig {
                    max_batch_size: 0,
                    optimization_level: 1,
                }),
                "diff.max_batch_size",
            ),
            (
                SingletonConfig::diff(&v1::DiffConfig {
                    max_batch_size: 1,
                    optimization_level: 9,
                }),
                "diff.optimization_level",
            ),
            (
                SingletonConfig::diff(&v1::DiffConfig {
                    max_batch_size: 1,
                    optimization_level: 0,
                }),
                "diff.optimization_level",
            ),
            (
                SingletonConfig::processor(
                    &v1::ProcessorConfig {
                        pause_authority: "nope!".into(),
                        ..Default::default()
                    },
                    &[1; 32],
                ),
                "processor.pause_authority",
            ),
        ];
        for (result, field) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.grpc_code(), tonic::Code::InvalidArgument);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        let defaulted = SingletonConfig::processor(&v1::ProcessorConfig::default(), &[1; 32]);
        let SingletonConfig::Processor(p) = defaulted.unwrap() else {
            panic!("not a processor config");
        };
        assert_eq!(p.pause_authority, [1; 32]);
    }

    #[test]
    fn partial_update_changes_only_the_fields_given() {
        let base = SingletonConfig::Scheduler(SchedulerConfig {
            max_shards: 100,
            max_queue_size: 1000,
            default_priority: 5,
        });
        let update = Update::Scheduler(v1::SchedulerConfigUpdate {
            max_queue_size: Some(2000),
            ..Default::default()
        });
        assert_eq!(
            base.merged(&update).unwrap(),
            SingletonConfig::Scheduler(SchedulerConfig {
                max_shards: 100,
                max_queue_size: 2000,
                default_priority: 5,
            })
        );
        let bad = Update::Scheduler(v1::SchedulerConfigUpdate {
            default_priority: Some(42),
            ..Default::default()
        });
        assert!(base
            .merged(&bad)
            .unwrap_err()
            .to_string()
            .contains("scheduler.default_priority"));
        let wrong_kind = Update::Diff(v1::DiffConfigUpdate::default());
        assert!(base.merged(&wrong_kind).is_err());
    }

    #[test]
    fn json_round_trips_with_readable_fields() {
        let diff = SingletonConfig::Diff(DiffConfig {
            max_batch_size: 50,
            optimization_level: OptimizationLevel::Basic,
        });
        let text = diff.to_json();
        assert_eq!(
            text,
            r#"{"max_batch_size":50,"optimization_level":"basic"}"#
        );
        assert_eq!(SingletonConfig::from_json(Kind::Diff, &text).unwrap(), diff);
        let processor = SingletonConfig::Processor(ProcessorConfig {
            max_verification_functions: 1,
            max_compute_units: 2,
            pause_authority: [0; 32],
        });
        let text = processor.to_json();
        assert!(text.contains("11111111111111111111111111111111"), "{text}");
        assert_eq!(
            SingletonConfig::from_json(Kind::Processor, &text).unwrap(),
            processor
        );
    }
}
