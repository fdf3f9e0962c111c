//! One integration-test binary (a link of the server is expensive): a module
//! per area, sharing helpers that start real servers on loopback ports.

mod browser;
#[cfg(feature = "embedded-chain")]
mod builder;
#[cfg(feature = "embedded-chain")]
mod chain;
#[cfg(feature = "embedded-chain")]
mod chaos;
mod cli;
mod common;
mod deploy;
mod events;
#[cfg(feature = "embedded-chain")]
mod factory;
mod grpc_api;
mod leases;
mod limits;
mod orchestrator;
mod paging;
mod process;
mod proxy;
mod python;
#[cfg(feature = "embedded-chain")]
mod replicas;
mod rest;
mod shard_program;
#[cfg(feature = "embedded-chain")]
mod shards;
#[cfg(feature = "embedded-chain")]
mod singletons;
mod sse;
mod store;
mod supervision;
mod telemetry;
mod tls;
