//! Layer 0, the domain: Herald's rules and formats. Nothing here calls AWS; every module may be
//! used by any layer above.

pub mod auth;
pub mod budget;
pub mod chat;
pub mod config;
pub mod cursor;
pub mod frames;
pub mod groups;
pub mod horizon;
pub mod inbox;
pub mod metrics;
pub mod notification;
pub mod policy;
pub mod preferences;
pub mod tls;
