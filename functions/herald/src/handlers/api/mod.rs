//! The HTTP API (`lambda_http`, payload format 2.0). Bearer JWT, checked by the same verifier as
//! the WebSocket authorizer. Errors are `{"error":{"code","message"}}` with the right status and
//! never an internal name or trace.

mod chat;
mod notifications;
mod preferences;
mod presence;
mod push;
mod reminders;
mod subscriptions;

use aws_config::SdkConfig;
use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

use crate::domain::auth::{AuthError, JwtConfig, Principal, Verifier};
use crate::domain::budget::Budget;
use crate::domain::config::{Env, Limits};
use crate::domain::metrics::Metrics;
use crate::domain::policy::{ReminderPolicy, RolePolicy};
use crate::io::push::EndpointPolicy;
use crate::io::queue::Queue;
use crate::io::store::Store;
use crate::services::chat::{History, Receipts, Sharing};
use crate::services::deps::Deps;
use crate::services::inbox::ReadSync;
use crate::services::limiter::Limiter;
use crate::services::membership::Unsubscriber;
use crate::services::reminders::Reminders;
use crate::services::replay::Replay;
use crate::services::runtime::{HttpHandler, InitError};
use crate::services::schedule::Deferral;
use crate::services::web_push::Subscriptions;

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;
/// Unread counts stop here ("99+" in a UI); counting further would read the whole log.
pub const UNREAD_CAP: usize = 1000;
/// Connections listed by one presence page at most.
pub const PRESENCE_PAGE: usize = 1000;
/// How far past the clock an `upTo` cursor may be (clock skew between Lambda instances).
const UP_TO_SKEW_MS: u64 = 30_000;

pub use crate::services::http::ApiError;
pub use crate::services::http::percent_decode;
use crate::services::http::{body_text, json_body, page_limit};

type ApiResult = Result<(StatusCode, Option<Value>), ApiError>;

pub struct Api {
    verifier: Verifier,
    store: Store,
    queue: Queue,
    limits: Limits,
    roles: RolePolicy,
    unsubscriber: Unsubscriber,
    limiter: Limiter,
    /// The VAPID public key clients subscribe with; `None`: push is off.
    vapid_public_key: Option<String>,
    reminders: Reminders,
    push_subscriptions: Subscriptions,
    replay: Replay,
    history: History,
    receipts: Receipts,
    sharing: Sharing,
    /// Who may mark a notification `critical`.
    critical: ReminderPolicy,
    read_sync: ReadSync,
}

impl HttpHandler for Api {
    const NAME: &'static str = "api";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let verifier = Verifier::load(JwtConfig::from_source(&Env)?).await?;
        let d = Deps::new(sdk);
        let (store, queue, limits, roles) = (d.store()?, d.queue()?, d.limits()?, d.roles()?);
        let deferral = Deferral::new(store.clone(), queue.clone(), d.scheduler()?, limits.retention_seconds);
        let poster = d.poster()?;
        let presence = d.presence(Self::NAME)?;
        let push = d.push_settings()?;
        Ok(Self {
            push_subscriptions: Subscriptions::new(store.clone(), EndpointPolicy::from(&push)),
            reminders: Reminders::new(store.clone(), deferral, ReminderPolicy::from_source(&Env)?),
            critical: ReminderPolicy::from_source(&Env)?,
            read_sync: d.read_sync()?,
            vapid_public_key: push.vapid_public_key,
            unsubscriber: Unsubscriber::new(store.clone(), poster, roles.clone(), presence),
            limiter: Limiter::new(store.clone(), Budget::http(&Env)?),
            replay: d.replay()?,
            history: d.history()?,
            receipts: d.receipts(Self::NAME)?,
            sharing: d.sharing()?,
            verifier,
            store,
            queue,
            limits,
            roles,
        })
    }

    /// Routes a request; never fails: every error becomes a JSON error response.
    async fn handle(&self, req: Request) -> Response<Body> {
        let mut retry_after = None;
        let (status, body) = match self.route(&req).await {
            Ok(ok) => ok,
            Err(e) => {
                retry_after = e.retry_after;
                (e.status, Some(json!({"error": {"code": e.code, "message": e.message}})))
            }
        };
        let mut builder = Response::builder().status(status);
        if let Some(seconds) = retry_after {
            builder = builder.header("retry-after", seconds.to_string());
        }
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Body::Text(v.to_string())
            }
            None => Body::Empty,
        };
        builder.body(body).unwrap_or_default()
    }
}

impl Api {
    async fn route(&self, req: &Request) -> ApiResult {
        let path = req.raw_http_path().to_owned();
        let path = if path.is_empty() { req.uri().path().to_owned() } else { path };
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(percent_decode)
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad_request("malformed path"))?;
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = req.method().clone();
        // Authenticate before routing so an unauthenticated caller learns nothing about routes.
        let principal = self.authenticate(req).await?;
        // Per caller, not per connection: one user's script cannot starve the others.
        let received = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.time_epoch,
            _ => 0,
        };
        if let Some(ms) = self
            .limiter
            .check(&Limiter::caller_key(&principal.tenant, &principal.user), received)
            .await?
        {
            Metrics::new("api").count("RateLimited", 1).flush();
            return Err(ApiError::over_budget(ms));
        }
        match (method, segs.as_slice()) {
            (Method::GET, ["notifications", "missed"]) => self.missed(&principal, req).await,
            (Method::POST, ["notifications", "read"]) => self.read(&principal, req).await,
            (Method::GET, ["notifications", "unread-count"]) => self.unread_count(&principal).await,
            (Method::POST, ["notifications"]) => self.publish(&principal, req).await,
            (Method::POST, ["reminders"]) => self.create_reminder(&principal, req).await,
            (Method::GET, ["reminders", id]) => self.get_reminder(&principal, id).await,
            (Method::DELETE, ["reminders", id]) => self.cancel_reminder(&principal, id).await,
            (Method::PUT, ["subscriptions", user, group]) => self.subscription(&principal, user, group, true).await,
            (Method::DELETE, ["subscriptions", user, group]) => self.subscription(&principal, user, group, false).await,
            (Method::GET, ["groups", group, "presence"]) => self.presence(&principal, group, req).await,
            (Method::GET, ["groups", group, "history"]) => self.history(&principal, group, req).await,
            (Method::POST, ["groups", group, "read"]) => self.mark_read(&principal, group, req).await,
            (Method::GET, ["groups", group, "receipts"]) => self.receipts(&principal, group, req).await,
            (Method::POST, ["uploads"]) => self.upload(&principal, req).await,
            (Method::GET, ["uploads", key @ ..]) if !key.is_empty() => self.download(&principal, &key.join("/")).await,
            (Method::PUT, ["push", "subscriptions"]) => self.push_subscribe(&principal, req).await,
            (Method::DELETE, ["push", "subscriptions"]) => self.push_unsubscribe(&principal, req).await,
            (Method::GET, ["push", "vapid-public-key"]) => self.vapid_public_key(),
            (Method::GET, ["preferences"]) => self.get_preferences(&principal, false).await,
            (Method::PUT, ["preferences"]) => self.put_preferences(&principal, req, false).await,
            (Method::GET, ["preferences", "tenant"]) => self.get_preferences(&principal, true).await,
            (Method::PUT, ["preferences", "tenant"]) => self.put_preferences(&principal, req, true).await,
            _ => Err(ApiError::not_found("no such route")),
        }
    }

    async fn authenticate(&self, req: &Request) -> Result<Principal, ApiError> {
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?;
        Ok(self.verifier.verify_refreshing(token.trim()).await?)
    }
}
