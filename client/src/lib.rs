//! Typed client for the Valence Lifecycle Manager's gRPC API.
//!
//! [`LifecycleClient::connect`] opens one HTTP/2 channel with a connect
//! timeout, a per-request deadline and an optional bearer token, and hands
//! out typed stubs for the four services plus gRPC health. Failures come back
//! as [`ClientError`], one variant per gRPC code a caller is expected to act
//! on. [`LifecycleClient::subscribe_resilient`] follows the event log as one
//! uninterrupted stream, reconnecting and resuming on its own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), valence_lifecycle_client::ClientError> {
//! use valence_lifecycle_client::{api::v1, ClientConfig, LifecycleClient};
//!
//! let client = LifecycleClient::connect(ClientConfig::default()).await?;
//! let stats = client
//!     .lifecycle()
//!     .get_stats(v1::GetStatsRequest {})
//!     .await?
//!     .into_inner();
//! println!("{} accounts", stats.accounts);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, unreachable_pub)]

mod config;
mod connect;
mod error;
pub mod subscribe;

pub use config::ClientConfig;
pub use connect::{AuthedChannel, CallInterceptor, LifecycleClient, SERVICE_NAMES};
pub use error::ClientError;
pub use subscribe::{resume_request, Backoff, Subscription, SubscriptionItem};
/// The API crate (generated messages, stubs and JSON helpers), re-exported so
/// callers need only this crate.
pub use valence_lifecycle_api as api;
