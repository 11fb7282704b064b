//! Herald's core library. Every Lambda in `functions/` is a few lines of wiring over this crate:
//! the logic lives here, one module per concept, so it can be tested without a Lambda runtime.
//!
//! The source tree is the layer diagram. Each folder is a layer; a module may use its own layer
//! or a lower one, never a higher one, and modules never import each other in a circle
//! (`layering_tests.rs` checks both from the sources):
//!
//! ```text
//! handlers/   3  one module per Lambda function: parse the event, call a service, answer;
//!                no handler names another, and `handlers/mod.rs` maps `_HANDLER` names to them
//!     │
//! services/   2  the protocols functions share: notify (the notification lifecycle),
//!                broadcast (log, then fan out), publish, replay (resume and missed), retries,
//!                membership, connections, presence, limiter, escalation, web_push, reminders,
//!                schedule, submissions (POST /notifications), gateway (WebSocket events), http
//!                (HTTP requests and answers), runtime (init and the Lambda loops)
//!     │
//! io/         1  AWS and the wire: store (DynamoDB), queue (SQS, and every message Herald sends
//!                itself), delivery (@connections posts and fan-out), push (Web Push encryption
//!                and sender), sdk_http (the SDK's client)
//!     │
//! domain/     0  rules and formats, no AWS calls: auth, policy, budget, groups, cursor, horizon,
//!                notification, frames, metrics, config, tls (the one TLS client configuration)
//! ```

pub mod domain;
pub mod handlers;
pub mod io;
pub mod services;

#[cfg(test)]
mod layering_tests;

/// Lambda's error type at the edges: handlers return typed errors that convert into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
