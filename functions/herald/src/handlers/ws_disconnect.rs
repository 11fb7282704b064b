//! `$disconnect`: remove the connection and all its memberships. Idempotent, because API Gateway
//! delivers `$disconnect` at best once and a 410 or TTL may have cleaned up first.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};

use crate::BoxError;
use crate::domain::metrics::Metrics;
use crate::io::store::Store;
use crate::services::connections::close;
use crate::services::deps::Deps;
use crate::services::gateway::status;
use crate::services::presence::Presence;
use crate::services::runtime::{Handler, InitError};

pub struct WsDisconnect {
    store: Store,
    presence: Presence,
}

impl WsDisconnect {
    pub fn new(store: Store, presence: Presence) -> Self {
        Self { store, presence }
    }

    pub async fn disconnect(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, BoxError> {
        // Only the connection id is needed: cleanup must work even without authorizer context.
        let Some(id) = req.request_context.connection_id.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(status(200));
        };
        let removed = close(&self.store, &self.presence, id).await?;
        tracing::info!(connection = %id, memberships = removed, code = ?req.request_context.disconnect_status_code, "disconnected");
        Metrics::new("ws-disconnect").count("ConnectionsClosed", 1).flush();
        Ok(status(200))
    }
}

impl Handler for WsDisconnect {
    type Event = ApiGatewayWebsocketProxyRequest;
    type Output = ApiGatewayProxyResponse;
    const NAME: &'static str = "ws-disconnect";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        Ok(Self::new(d.store()?, d.presence(Self::NAME)?))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.disconnect(&event).await
    }
}
