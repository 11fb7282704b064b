//! Layer 2, services: the protocols several functions share, built from the domain and I/O.
//! Nothing here names a handler.

pub mod broadcast;
pub mod chat;
pub mod connections;
pub mod deps;
pub mod escalation;
pub mod gateway;
pub mod http;
pub mod inbox;
pub mod intake;
pub mod lifecycle;
pub mod limiter;
pub mod membership;
pub mod notify;
pub mod preferences;
pub mod presence;
pub mod publish;
pub mod reminders;
pub mod replay;
pub mod retries;
pub mod runtime;
pub mod schedule;
pub mod submissions;
pub mod web_push;
