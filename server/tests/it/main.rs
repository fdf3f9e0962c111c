//! One integration-test binary (a link of the server is expensive): a module
//! per area, sharing helpers that start real servers on loopback ports.

mod common;
mod store;
mod grpc_api;
mod rest;
mod events;
mod process;
mod proxy;
mod cli;
