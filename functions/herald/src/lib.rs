//! Herald's core library. Every Lambda in `functions/` is a few lines of wiring over this crate:
//! the logic lives here, one module per concept, so it can be tested without a Lambda runtime.

pub mod auth;
pub mod broadcast;
pub mod budget;
pub mod config;
pub mod cursor;
pub mod delivery;
pub mod escalation;
pub mod frames;
pub mod gateway;
pub mod groups;
pub mod handlers;
pub mod horizon;
pub mod limiter;
pub mod membership;
pub mod metrics;
pub mod notification;
pub mod offline;
pub mod policy;
pub mod presence;
pub mod publish;
pub mod push;
pub mod queue;
pub mod replay;
pub mod runtime;
pub mod schedule;
pub mod sdk_http;
pub mod store;
pub mod tls;

#[cfg(test)]
mod layering_tests;

/// Lambda's error type at the edges: handlers return typed errors that convert into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
