//! `$connect`: open the connection (`services::connections`: its automatic memberships and
//! presence), then accept. Answers `herald.v1` when the browser
//! offered it (the token came as a subprotocol). A user over their connect budget
//! (`HERALD_CONNECT_RATE`/`BURST`) is refused with 429 and `Retry-After`; one who already holds
//! `HERALD_MAX_CONNECTIONS_PER_USER` open connections with 429.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::http::HeaderValue;

use crate::BoxError;
use crate::domain::auth::SUBPROTOCOL;
use crate::domain::budget::Budget;
use crate::domain::config::{Env, Limits};
use crate::io::store::Store;
use crate::services::connections::{Connections, Opened};
use crate::services::deps::Deps;
use crate::services::gateway::{caller, status};
use crate::services::limiter::Limiter;
use crate::services::presence::Presence;
use crate::services::runtime::{Handler, InitError};

pub struct WsConnect {
    connections: Connections,
}

impl WsConnect {
    pub fn new(store: Store, limits: Limits, presence: Presence, connects: Option<Budget>) -> Self {
        let limiter = Limiter::new(store.clone(), connects);
        Self {
            connections: Connections::new(store, limits, presence, limiter),
        }
    }

    pub async fn connect(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, BoxError> {
        let who = caller(req)?;
        let rc = &req.request_context;
        match self.connections.open(&who, rc.request_time_epoch, rc.connected_at).await? {
            Opened::Accepted => {}
            Opened::OverBudget(ms) => {
                let mut resp = status(429);
                if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                    resp.headers.insert("Retry-After", v);
                }
                return Ok(resp);
            }
            Opened::TooMany => return Ok(status(429)),
        }
        let mut resp = status(200);
        let offered = req
            .headers
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if offered.split(',').any(|p| p.trim() == SUBPROTOCOL) {
            resp.headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
        }
        Ok(resp)
    }
}

impl Handler for WsConnect {
    type Event = ApiGatewayWebsocketProxyRequest;
    type Output = ApiGatewayProxyResponse;
    const NAME: &'static str = "ws-connect";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        Ok(Self::new(d.store()?, d.limits()?, d.presence(Self::NAME)?, Budget::connects(&Env)?))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.connect(&event).await
    }
}
