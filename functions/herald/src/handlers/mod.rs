//! One module per function: parse the event, apply it through the core modules, answer.
//! Handlers only look down: nothing below this module names a handler, and no handler names
//! another (what two functions share lives in a concept module: `membership`, `replay`,
//! `schedule`, `queue`, `gateway`, ...).

pub mod api;
pub mod authorizer;
pub mod dispatch;
pub mod reminder;
pub mod retry;
pub mod ws_connect;
pub mod ws_disconnect;
pub mod ws_join;
pub mod ws_message;

use std::str::FromStr;

use crate::BoxError;
use crate::services::runtime::{run, run_http};

/// The nine functions, by the name `template.yaml` gives each in `Handler:` (Lambda passes it in
/// `_HANDLER`). One binary serves them all, so the table lives here, above every handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerName {
    Authorizer,
    WsConnect,
    WsDisconnect,
    WsJoin,
    WsMessage,
    Dispatch,
    Retry,
    Reminder,
    Api,
}

impl HandlerName {
    pub const ALL: [HandlerName; 9] = [
        Self::Authorizer,
        Self::WsConnect,
        Self::WsDisconnect,
        Self::WsJoin,
        Self::WsMessage,
        Self::Dispatch,
        Self::Retry,
        Self::Reminder,
        Self::Api,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorizer => "authorizer",
            Self::WsConnect => "ws-connect",
            Self::WsDisconnect => "ws-disconnect",
            Self::WsJoin => "ws-join",
            Self::WsMessage => "ws-message",
            Self::Dispatch => "dispatch",
            Self::Retry => "retry",
            Self::Reminder => "reminder",
            Self::Api => "api",
        }
    }
}

/// `_HANDLER` names no Herald function.
#[derive(Debug, thiserror::Error)]
#[error("unknown handler {given:?}: set the function's Handler to one of {}", HandlerName::ALL.map(HandlerName::as_str).join(", "))]
pub struct UnknownHandler {
    given: String,
}

impl FromStr for HandlerName {
    type Err = UnknownHandler;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| UnknownHandler { given: s.to_owned() })
    }
}

/// Runs the named function until the Lambda runtime stops it. Each arm monomorphises the
/// runtime loop for one handler, so there is no dynamic dispatch per event.
pub async fn run_named(name: HandlerName) -> Result<(), BoxError> {
    match name {
        HandlerName::Authorizer => run::<authorizer::Authorizer>().await,
        HandlerName::WsConnect => run::<ws_connect::WsConnect>().await,
        HandlerName::WsDisconnect => run::<ws_disconnect::WsDisconnect>().await,
        HandlerName::WsJoin => run::<ws_join::WsJoin>().await,
        HandlerName::WsMessage => run::<ws_message::WsMessage>().await,
        HandlerName::Dispatch => run::<dispatch::Dispatch>().await,
        HandlerName::Retry => run::<retry::Retry>().await,
        HandlerName::Reminder => run::<reminder::ReminderTarget>().await,
        HandlerName::Api => run_http::<api::Api>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_unknown_names_list_the_choices() {
        for h in HandlerName::ALL {
            assert_eq!(h.as_str().parse::<HandlerName>().ok(), Some(h));
        }
        let err = "bootstrap".parse::<HandlerName>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("\"bootstrap\"") && err.contains("ws-message") && err.contains("api"),
            "{err}"
        );
    }
}
