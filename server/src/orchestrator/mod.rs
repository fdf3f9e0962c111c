//! The orchestrator: progression rules, their conditions and actions.
//!
//! This release validates and stores rules; evaluating them against
//! sessions and executing their actions arrives with the orchestrator
//! component itself.

pub mod rules;
