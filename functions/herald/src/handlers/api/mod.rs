//! The HTTP API: the caller authenticated (Bearer JWT) and held to its request budget before
//! routing, then one file per resource. Reading a request and the answer, errors included, are
//! `services::http`'s.

mod chat;
mod notifications;
mod preferences;
mod presence;
mod push;
mod reminders;
mod subscriptions;

use aws_config::SdkConfig;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};

use crate::domain::auth::{JwtConfig, Verifier};
use crate::domain::budget::Budget;
use crate::domain::config::{Env, Limits};
use crate::domain::metrics::Metrics;
use crate::domain::policy::{ReminderPolicy, RolePolicy};
use crate::io::push::EndpointPolicy;
use crate::io::store::Store;
use crate::services::chat::{History, Receipts, Sharing};
use crate::services::deps::Deps;
use crate::services::http::{ApiError, ApiResult, authenticate, body_text, json_body, page_limit, path_segments, received_at, respond};
use crate::services::inbox::{Inbox, ReadSync};
use crate::services::limiter::Limiter;
use crate::services::membership::Unsubscriber;
use crate::services::reminders::Reminders;
use crate::services::runtime::{HttpHandler, InitError};
use crate::services::schedule::Deferral;
use crate::services::submissions::Submissions;
use crate::services::web_push::Subscriptions;

pub struct Api {
    verifier: Verifier,
    store: Store,
    limits: Limits,
    roles: RolePolicy,
    unsubscriber: Unsubscriber,
    limiter: Limiter,
    /// The VAPID public key clients subscribe with; `None`: push is off.
    vapid_public_key: Option<String>,
    reminders: Reminders,
    push_subscriptions: Subscriptions,
    inbox: Inbox,
    history: History,
    receipts: Receipts,
    sharing: Sharing,
    submissions: Submissions,
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
            submissions: Submissions::new(store.clone(), queue.clone(), &limits, ReminderPolicy::from_source(&Env)?),
            read_sync: d.read_sync()?,
            vapid_public_key: push.vapid_public_key,
            unsubscriber: Unsubscriber::new(store.clone(), poster, roles.clone(), presence),
            limiter: Limiter::new(store.clone(), Budget::http(&Env)?),
            inbox: d.inbox()?,
            history: d.history()?,
            receipts: d.receipts(Self::NAME)?,
            sharing: d.sharing()?,
            verifier,
            store,
            limits,
            roles,
        })
    }

    /// Routes a request; never fails: every error becomes a JSON error response.
    async fn handle(&self, req: Request) -> Response<Body> {
        respond(self.route(&req).await)
    }
}

impl Api {
    async fn route(&self, req: &Request) -> ApiResult {
        let segments = path_segments(req)?;
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = req.method().clone();
        // Authenticate before routing so an unauthenticated caller learns nothing about routes.
        let principal = authenticate(&self.verifier, req).await?;
        // Per caller, not per connection: one user's script cannot starve the others.
        let caller = Limiter::caller_key(&principal.tenant, &principal.user);
        if let Some(ms) = self.limiter.check(&caller, received_at(req)).await? {
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
}
