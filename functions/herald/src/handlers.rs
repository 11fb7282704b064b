//! One module per function: parse the event, apply it through the core modules, answer.

pub mod api;
pub mod authorizer;
pub mod dispatch;
pub mod reminder;
pub mod retry;
pub mod ws_connect;
pub mod ws_disconnect;
pub mod ws_join;
pub mod ws_message;

mod defer;
mod replay;
mod unsubscribe;
mod ws;

pub use replay::{ReplayPage, merge_pages, read_merged};
