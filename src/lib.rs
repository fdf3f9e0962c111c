//! Generated protobuf types and gRPC stubs of the Valence Lifecycle Manager
//! API (`valence.lifecycle.v1`), plus the encoded descriptor set for gRPC
//! reflection.
//!
//! Enable the `client` feature for client stubs and `server` for server traits.

/// Messages, enums and service stubs of `valence.lifecycle.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("valence.lifecycle.v1");
    include!(concat!(env!("OUT_DIR"), "/enum_names.rs"));
}

pub mod initial_state;
pub mod json;
pub mod rule_json;

/// Fully qualified names of the four API services, as registered with
/// gRPC health and reflection (the server checks them against its
/// generated service names).
pub const SERVICE_NAMES: [&str; 4] = [
    "valence.lifecycle.v1.LifecycleService",
    "valence.lifecycle.v1.RuleService",
    "valence.lifecycle.v1.SingletonAdminService",
    "valence.lifecycle.v1.EventStreamService",
];

/// Encoded `FileDescriptorSet` of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/valence_lifecycle_v1_descriptor.bin"
));
