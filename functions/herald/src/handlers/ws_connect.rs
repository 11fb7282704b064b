//! `$connect`: store the connection and its automatic memberships (`user:{sub}`, `tenant`, `all`
//! and the user's durable subscriptions; presence events for them), then accept. Answers `herald.v1` when the browser
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
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::io::store::{ConnectionRecord, Store};
use crate::services::gateway::{caller, status};
use crate::services::limiter::Limiter;
use crate::services::presence::Presence;
use crate::services::runtime::{Handler, InitError};

pub struct WsConnect {
    store: Store,
    limits: Limits,
    presence: Presence,
    limiter: Limiter,
}

impl WsConnect {
    pub fn new(store: Store, limits: Limits, presence: Presence, connects: Option<Budget>) -> Self {
        Self {
            limiter: Limiter::new(store.clone(), connects),
            store,
            limits,
            presence,
        }
    }

    pub async fn connect(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, BoxError> {
        let who = caller(req)?;
        let p = &who.principal;
        // A user's connects are budgeted (a reconnect loop costs two invocations and a dozen
        // writes a cycle); over it: 429 with Retry-After, nothing written.
        let key = Limiter::connect_key(&p.tenant, &p.user);
        if let Some(ms) = self.limiter.check(&key, req.request_context.request_time_epoch).await? {
            Metrics::new("ws-connect").count("ConnectsLimited", 1).flush();
            let mut resp = status(429);
            if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                resp.headers.insert("Retry-After", v);
            }
            return Ok(resp);
        }
        // The user's open connections are the members of their personal group (one partition).
        // Counted before this one is written, so a burst of simultaneous connects may pass the
        // cap by a few; what the cap guards against is a steady pile-up.
        let open = self.store.connections.all_members(&Group::user(&p.user).key(&p.tenant), 1).await?;
        if open.len() >= self.limits.max_connections_per_user {
            tracing::info!(user = %p.user, tenant = %p.tenant, open = open.len(), "connect refused: too many connections");
            Metrics::new("ws-connect").count("ConnectionsRefused", 1).flush();
            return Ok(status(429));
        }
        let mut groups = vec![Group::user(&p.user), Group::Tenant, Group::All];
        groups.extend(self.store.subscriptions.list(&p.tenant, &p.user).await?);
        let record = ConnectionRecord {
            id: who.connection_id.clone(),
            user: p.user.clone(),
            tenant: p.tenant.clone(),
            roles: p.roles.clone(),
            groups: p.groups.clone(),
            connected_at: req.request_context.connected_at,
        };
        self.store
            .connections
            .open(&record, &groups, self.limits.membership_shards, self.limits.connection_ttl_seconds)
            .await?;
        // The auto-joins count as joins for presence (a subscribed `room:7`, say). This
        // connection is not told: it cannot be posted to before the handshake completes.
        self.presence.arrived(&p.tenant, &p.user, &record.id, &groups).await?;
        tracing::info!(connection = %record.id, user = %p.user, tenant = %p.tenant, groups = groups.len(), "connected");
        Metrics::new("ws-connect").count("ConnectionsOpened", 1).flush();

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
        let store = Store::from_env(&sdk)?;
        let limits = Limits::from_source(&Env)?;
        let presence = Presence::from_env(Self::NAME, &sdk, store.clone(), &limits)?;
        Ok(Self::new(store, limits, presence, Budget::connects(&Env)?))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.connect(&event).await
    }
}
