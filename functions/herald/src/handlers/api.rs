//! The HTTP API (`lambda_http`, payload format 2.0). Bearer JWT, checked by the same verifier as
//! the WebSocket authorizer. Errors are `{"error":{"code","message"}}` with the right status and
//! never an internal name or trace.

use std::collections::{HashMap, HashSet};

use aws_config::SdkConfig;
use chrono::Utc;
use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

use crate::domain::auth::{AuthError, JwtConfig, Principal, Role, Verifier};
use crate::domain::budget::Budget;
use crate::domain::config::{Env, Limits, PushSettings, Queues, Scheduling, ws_endpoint};
use crate::domain::cursor::{Cursor, now_millis};
use crate::domain::groups::{Group, valid_id};
use crate::domain::metrics::Metrics;
use crate::domain::notification::{ParseLimits, ProducerMessage, RejectCode, Target, USER_SCOPE, parse_producer_message, user_scoped_id};
use crate::domain::policy::{PresencePolicy, ReminderPolicy, RolePolicy};
use crate::io::delivery::Poster;
use crate::io::push::{EndpointPolicy, SUBSCRIPTION_DAYS, endpoint_key, parse_endpoint, parse_subscription};
use crate::io::queue::{Queue, QueueError};
use crate::io::store::{ReminderState, Store, StoreError, epoch_seconds};
use crate::services::limiter::Limiter;
use crate::services::membership::{PresenceToken, Unsubscriber, entitled, presence_page};
use crate::services::presence::{Presence, PresenceError};
use crate::services::replay::{ReadRequest, Reader, Replay, Start};
use crate::services::runtime::{HttpHandler, InitError};
use crate::services::schedule::{DeferError, Deferral, Deferred, Scheduler};

pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;
/// Unread counts stop here ("99+" in a UI); counting further would read the whole log.
pub const UNREAD_CAP: usize = 1000;
/// Connections listed by one presence page at most.
pub const PRESENCE_PAGE: usize = 1000;
/// Push subscriptions (browsers, devices) one user keeps at most.
pub const MAX_PUSH_SUBSCRIPTIONS: usize = 20;
/// How far past the clock an `upTo` cursor may be (clock skew between Lambda instances).
const UP_TO_SKEW_MS: u64 = 30_000;

/// An HTTP error as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After`, on a 429 of the caller's request budget.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// The caller spent its request budget: 429 with `Retry-After` (whole seconds, at least 1).
    fn over_budget(retry_after_ms: u64) -> Self {
        Self {
            retry_after: Some(retry_after_ms.div_ceil(1000).max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("request budget exceeded; try again in {retry_after_ms} ms"),
            )
        }
    }
    fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        if e.is_throttling() {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "try again shortly")
        } else {
            ApiError::internal()
        }
    }
}

impl From<DeferError> for ApiError {
    fn from(e: DeferError) -> Self {
        match e {
            DeferError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "downstream failure");
                ApiError::internal()
            }
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::error!(error = %e, "queue failure");
        ApiError::internal()
    }
}

impl From<PresenceError> for ApiError {
    fn from(e: PresenceError) -> Self {
        match e {
            PresenceError::Store(s) => s.into(),
            PresenceError::Queue(q) => q.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    }
}

type ApiResult = Result<(StatusCode, Option<Value>), ApiError>;

pub struct Api {
    verifier: Verifier,
    store: Store,
    queue: Queue,
    deferral: Deferral,
    limits: Limits,
    roles: RolePolicy,
    unsubscriber: Unsubscriber,
    limiter: Limiter,
    /// The VAPID public key clients subscribe with; `None`: push is off.
    vapid_public_key: Option<String>,
    /// What callers' own reminders may carry, and how many a user keeps pending.
    reminder_policy: ReminderPolicy,
    /// Where push endpoints may point (SSRF: Herald POSTs to them).
    push_endpoints: EndpointPolicy,
    replay: Replay,
}

impl HttpHandler for Api {
    const NAME: &'static str = "api";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let verifier = Verifier::load(JwtConfig::from_source(&Env)?).await?;
        let store = Store::from_env(&sdk)?;
        let queue = Queue::new(&sdk, Queues::from_source(&Env)?);
        let limits = Limits::from_source(&Env)?;
        let scheduler = Scheduler::new(&sdk, Scheduling::from_source(&Env)?);
        let deferral = Deferral::new(store.clone(), queue.clone(), scheduler, limits.retention_seconds);
        let roles = RolePolicy::from_source(&Env)?;
        let poster = Poster::new(&sdk, &ws_endpoint(&Env)?)?;
        let presence = Presence::new(
            Self::NAME,
            store.clone(),
            queue.clone(),
            poster.clone(),
            PresencePolicy::from_source(&Env)?,
            &limits,
        );
        let push = PushSettings::from_source(&Env)?;
        Ok(Self {
            push_endpoints: EndpointPolicy::from(&push),
            reminder_policy: ReminderPolicy::from_source(&Env)?,
            vapid_public_key: push.vapid_public_key,
            unsubscriber: Unsubscriber::new(store.clone(), poster, roles.clone(), presence),
            limiter: Limiter::new(store.clone(), Budget::http(&Env)?),
            replay: Replay::new(store.clone(), limits.retention_seconds),
            verifier,
            store,
            queue,
            deferral,
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
            (Method::PUT, ["push", "subscriptions"]) => self.push_subscribe(&principal, req).await,
            (Method::DELETE, ["push", "subscriptions"]) => self.push_unsubscribe(&principal, req).await,
            (Method::GET, ["push", "vapid-public-key"]) => self.vapid_public_key(),
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

    /// The topics whose log the caller may read: personal, tenant, platform-wide, and the groups
    /// the token or a durable subscription entitles them to.
    async fn readable_topics(&self, p: &Principal) -> Result<Vec<Group>, ApiError> {
        let mut topics: Vec<Group> = vec![Group::user(&p.user), Group::Tenant, Group::All];
        topics.extend(
            p.groups
                .iter()
                .filter_map(|g| Group::parse(g).ok())
                .filter(|g| matches!(g, Group::Named { .. })),
        );
        topics.extend(self.store.subscriptions.list(&p.tenant, &p.user).await?);
        let mut seen = HashSet::new();
        topics.retain(|g| seen.insert(g.clone()));
        Ok(topics)
    }

    async fn missed(&self, p: &Principal, req: &Request) -> ApiResult {
        let q = req.query_string_parameters();
        let start = Start::parse(q.first("since"), q.first("page")).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let limit = page_limit(q.first("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let topics = self.readable_topics(p).await?;
        // A poller keeps `cursor` for its next poll (any cursor it received works too); `next`
        // pages on from exactly what was read. What its cursor shows it has is read past.
        let read = self
            .replay
            .read(ReadRequest {
                tenant: &p.tenant,
                user: &p.user,
                topics: &topics,
                start,
                reader: Reader::Poller(0),
                limit,
                have: &[],
                visible_since: HashMap::new(),
            })
            .await?;
        let items: Vec<Value> = read
            .entries
            .iter()
            .map(|e| serde_json::from_str(&e.frame(false)).unwrap_or(Value::Null))
            .collect();
        let a = read.answer;
        Ok((
            StatusCode::OK,
            Some(json!({"items": items, "next": a.next, "cursor": a.cursor.to_string(), "gap": a.gap})),
        ))
    }

    async fn read(&self, p: &Principal, req: &Request) -> ApiResult {
        let body = json_body(req)?;
        // Validate everything before writing anything: a 400 changes nothing.
        let ids: Option<Vec<String>> = match body.get("ids") {
            None => None,
            Some(ids) => Some(
                ids.as_array()
                    .filter(|a| !a.is_empty() && a.len() <= 100)
                    .and_then(|a| {
                        a.iter()
                            .map(|i| i.as_str().filter(|s| !s.is_empty() && s.len() <= 128).map(str::to_owned))
                            .collect()
                    })
                    .ok_or_else(|| ApiError::bad_request("ids must hold 1..=100 notification ids"))?,
            ),
        };
        let up_to: Option<Cursor> = match body.get("upTo") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| s.parse::<Cursor>().ok())
                    .ok_or_else(|| ApiError::bad_request("upTo is not a valid cursor"))?,
            ),
        };
        // A cursor past the clock would mark read what does not exist yet (and so silence its
        // escalation). Herald hands out none beyond now; the skew covers Lambda clocks.
        if up_to.is_some_and(|c| c.millis() > now_millis() + UP_TO_SKEW_MS) {
            return Err(ApiError::bad_request("upTo is in the future; pass a cursor Herald handed out"));
        }
        if ids.is_none() && up_to.is_none() {
            return Err(ApiError::bad_request("give ids or upTo"));
        }
        let expires = epoch_seconds() + self.limits.retention_seconds as i64;
        let count = ids.as_ref().map_or(0, Vec::len);
        if let Some(ids) = &ids {
            self.store.read_state.mark_read(&p.tenant, &p.user, ids, expires).await?;
        }
        if let Some(cursor) = up_to {
            self.store.read_state.advance_cursor(&p.tenant, &p.user, cursor).await?;
        }
        Ok((StatusCode::OK, Some(json!({"count": count}))))
    }

    async fn unread_count(&self, p: &Principal) -> ApiResult {
        let topics = self.readable_topics(p).await?;
        let unread = self.replay.unread(&p.tenant, &p.user, &topics, UNREAD_CAP).await?;
        Ok((StatusCode::OK, Some(json!({"count": unread.count, "capped": unread.capped}))))
    }

    fn parse_notification(&self, p: &Principal, req: &Request) -> Result<crate::domain::notification::NotificationRequest, ApiError> {
        let raw = body_text(req)?;
        let limits = ParseLimits {
            payload_budget: self.limits.payload_budget,
            retention_seconds: self.limits.retention_seconds,
            escalate_min_seconds: self.limits.escalate_min_seconds,
        };
        let parsed = parse_producer_message(raw, limits).map_err(|r| match r.code {
            RejectCode::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", r.to_string()),
            RejectCode::BadRequest => ApiError::bad_request(r.to_string()),
        })?;
        let ProducerMessage::Notify(n) = parsed else {
            return Err(ApiError::bad_request("control messages go to /subscriptions and /reminders"));
        };
        if n.tenant != p.tenant {
            return Err(ApiError::forbidden("tenant does not match the token"));
        }
        if n.to == Target::All && !p.has(Role::Platform) {
            return Err(ApiError::forbidden("platform-wide notifications need the platform role"));
        }
        Ok(n)
    }

    async fn publish(&self, p: &Principal, req: &Request) -> ApiResult {
        if !p.has(Role::Service) {
            return Err(ApiError::forbidden("publishing needs the service role"));
        }
        let mut n = self.parse_notification(p, req)?;
        let id = n.id.get_or_insert_with(|| format!("n-{}", Cursor::now())).clone();
        reserved(&id)?;
        self.queue.dispatch(n.to_json().to_string(), 0).await?;
        Ok((StatusCode::ACCEPTED, Some(json!({"id": id}))))
    }

    async fn create_reminder(&self, p: &Principal, req: &Request) -> ApiResult {
        let mut n = self.parse_notification(p, req)?;
        let privileged = p.is_privileged();
        if !privileged && n.to != Target::User(p.user.clone()) {
            return Err(ApiError::forbidden("reminders for others need the service or admin role"));
        }
        if !self.reminder_policy.may_escalate(p) {
            let roles = self.reminder_policy.escalate_roles();
            if n.escalate_after.is_some() {
                return Err(ApiError::forbidden(format!(
                    "escalate: a reminder that escalates needs one of the roles {roles}"
                )));
            }
            if n.push.as_ref().is_some_and(|r| r.always) {
                return Err(ApiError::forbidden(format!(
                    "push: \"always\" in a reminder needs one of the roles {roles}; true pushes when not connected"
                )));
            }
        }
        let at = n.deliver_at.ok_or_else(|| ApiError::bad_request("deliverAt: is required"))?;
        if at <= Utc::now() {
            return Err(ApiError::bad_request("deliverAt: must be in the future"));
        }
        let id = n.id.get_or_insert_with(|| format!("r-{}", Cursor::now())).clone();
        reserved(&id)?;
        // A user's own reminder lives in the user's id namespace; a privileged caller acts as a
        // producer and uses the tenant's.
        let key = if privileged { id.clone() } else { user_scoped_id(&p.user, &id) };
        n.id = Some(key.clone());
        let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "conflict", m);
        if let Some(existing) = self.store.reminders.get(&p.tenant, &key).await? {
            if existing.state != ReminderState::Scheduled {
                return Err(conflict(format!("reminder {id} is already {}", existing.state.as_str())));
            }
            // Rescheduling is the owner's (or a service's); nobody takes over another's reminder.
            if !privileged && existing.owner.as_deref() != Some(p.user.as_str()) {
                return Err(conflict(format!("reminder id {id} is taken")));
            }
        }
        // A reminder's id is its notification's (dispatch deduplicates on it): an id already
        // delivered would be silently dropped when the reminder fires.
        if self.store.idempotency.exists(&p.tenant, &key).await? {
            return Err(conflict(format!("id {id} was already used by a notification")));
        }
        // A plain user's pending reminders are capped: each is a timer (and, past 15 minutes, a
        // schedule) kept for them. Rescheduling one already pending is not another. Checked
        // before writing, so concurrent requests can pass the cap by at most the HTTP burst.
        let max = self.reminder_policy.max_pending;
        if !privileged {
            let pending = self.store.reminders.pending_of(&p.tenant, &p.user).await?;
            if pending.len() >= max && !pending.contains(&key) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("at most {max} pending reminders per user; cancel one or wait until one fires"),
                ));
            }
        }
        match self.deferral.defer(&n, Some(p.user.clone())).await? {
            Deferred::Cancelled => Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("reminder {id} was cancelled"),
            )),
            _ => {
                if !privileged {
                    self.store.reminders.track_pending(&p.tenant, &p.user, &key, at.timestamp()).await?;
                }
                Ok((
                    StatusCode::CREATED,
                    Some(json!({"id": id, "state": "scheduled", "deliverAt": crate::domain::notification::format_time(&at)})),
                ))
            }
        }
    }

    async fn visible_reminder(&self, p: &Principal, id: &str) -> Result<crate::io::store::Reminder, ApiError> {
        if crate::domain::notification::validate_message_id(id).is_err() {
            return Err(ApiError::not_found("no such reminder"));
        }
        let privileged = p.is_privileged();
        let key = if privileged { id.to_owned() } else { user_scoped_id(&p.user, id) };
        let r = self
            .store
            .reminders
            .get(&p.tenant, &key)
            .await?
            .ok_or_else(|| ApiError::not_found("no such reminder"))?;
        // Someone else's reminder is reported as missing, not forbidden: ids are not disclosed.
        if !privileged && r.owner.as_deref() != Some(p.user.as_str()) {
            return Err(ApiError::not_found("no such reminder"));
        }
        Ok(r)
    }

    async fn get_reminder(&self, p: &Principal, id: &str) -> ApiResult {
        let r = self.visible_reminder(p, id).await?;
        let mut notification: Value = serde_json::from_str(&r.request).unwrap_or(Value::Null);
        // A user's own reminder is stored under `~{sub}~{id}`; the user sees the id they chose,
        // as in every other answer about it.
        if let Some(stored) = notification.get_mut("id")
            && stored.as_str().is_some_and(|s| s.starts_with('~'))
        {
            *stored = Value::String(id.to_owned());
        }
        Ok((
            StatusCode::OK,
            Some(json!({"id": id, "state": r.state.as_str(), "deliverAt": r.deliver_at, "notification": notification})),
        ))
    }

    async fn cancel_reminder(&self, p: &Principal, id: &str) -> ApiResult {
        let r = self.visible_reminder(p, id).await?;
        if r.state == ReminderState::Fired {
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "reminder already fired"));
        }
        self.deferral.cancel(&p.tenant, &r.id).await?;
        if let Some(owner) = &r.owner {
            self.store.reminders.untrack_pending(&p.tenant, owner, &r.id).await?;
        }
        Ok((StatusCode::NO_CONTENT, None))
    }

    async fn subscription(&self, p: &Principal, user: &str, group: &str, subscribe: bool) -> ApiResult {
        if !p.is_privileged() {
            return Err(ApiError::forbidden("subscriptions need the service or admin role"));
        }
        if !valid_id(user, 128) {
            return Err(ApiError::bad_request("user id must match [A-Za-z0-9._-]{1,128}"));
        }
        let group = Group::parse(group).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !matches!(group, Group::Named { .. }) {
            return Err(ApiError::bad_request("only named groups (kind:id) take subscriptions"));
        }
        if subscribe {
            self.store.subscriptions.subscribe(&p.tenant, user, &group).await?;
        } else {
            self.unsubscriber.unsubscribe(&p.tenant, user, &group).await?;
        }
        Ok((StatusCode::NO_CONTENT, None))
    }

    fn push_enabled(&self) -> Result<(), ApiError> {
        match self.vapid_public_key {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("Web Push is not configured")),
        }
    }

    fn vapid_public_key(&self) -> ApiResult {
        self.push_enabled()?;
        Ok((StatusCode::OK, Some(json!({"publicKey": self.vapid_public_key}))))
    }

    /// Stores the caller's browser subscription (one per endpoint; sending it again refreshes
    /// its expiry). Validated whole before anything is written: a 400 stores nothing.
    async fn push_subscribe(&self, p: &Principal, req: &Request) -> ApiResult {
        self.push_enabled()?;
        let sub = parse_subscription(body_text(req)?, &self.push_endpoints).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let existing = self.store.push_subscriptions.list(&p.tenant, &p.user).await?;
        let key = endpoint_key(&sub.endpoint);
        if existing.len() >= MAX_PUSH_SUBSCRIPTIONS && !existing.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_PUSH_SUBSCRIPTIONS} push subscriptions per user; delete one first"
            )));
        }
        let mut expires = epoch_seconds() + SUBSCRIPTION_DAYS * 24 * 3600;
        if let Some(ms) = sub.expires_ms {
            expires = expires.min(ms / 1000);
        }
        if expires <= epoch_seconds() {
            return Err(ApiError::bad_request("expirationTime has passed"));
        }
        self.store.push_subscriptions.put(&p.tenant, &p.user, &sub, expires).await?;
        Ok((StatusCode::CREATED, None))
    }

    /// Forgets one of the caller's subscriptions, by endpoint (absent is fine: 204 too).
    async fn push_unsubscribe(&self, p: &Principal, req: &Request) -> ApiResult {
        self.push_enabled()?;
        let endpoint = parse_endpoint(body_text(req)?, &self.push_endpoints).map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.store.push_subscriptions.remove(&p.tenant, &p.user, &endpoint).await?;
        Ok((StatusCode::NO_CONTENT, None))
    }

    /// Paged: a big tenant's presence would not fit one response (API Gateway and Lambda cap
    /// them at 6 MB), and reading it whole would be one long scan of every shard.
    async fn presence(&self, p: &Principal, group: &str, req: &Request) -> ApiResult {
        let group = Group::parse(group).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let q = req.query_string_parameters();
        let limit = page_limit(q.first("limit"), PRESENCE_PAGE, PRESENCE_PAGE)?;
        let shards = group.shards(self.limits.membership_shards);
        let from = match q.first("after").filter(|a| !a.is_empty()) {
            None => PresenceToken { shard: 0, after: None },
            Some(t) => {
                PresenceToken::decode(t, shards).ok_or_else(|| ApiError::bad_request("after is not a token from a previous page"))?
            }
        };
        // Every user is a member of `tenant`: its presence is the whole tenant's online users,
        // which is an operator's view, not a member's.
        if group == Group::Tenant && !p.is_privileged() {
            return Err(ApiError::forbidden("the tenant's presence needs the service or admin role"));
        }
        if !entitled(&self.store, &self.roles, p, &group).await? {
            return Err(ApiError::forbidden(format!("not a member of {group}")));
        }
        let page = presence_page(&self.store, &group.key(&p.tenant), shards, from, limit).await?;
        Ok((
            StatusCode::OK,
            Some(json!({
                "group": group.to_string(),
                "users": page.users,
                "connections": page.connections,
                "next": page.next.map(|t| t.encode()),
            })),
        ))
    }
}

/// A `limit` query parameter: `default` when absent, else a number in `1..=max`.
fn page_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={max}"))),
    }
}

/// Ids starting with `~` belong to users' own reminders ([`user_scoped_id`]); nobody names one.
fn reserved(id: &str) -> Result<(), ApiError> {
    if id.starts_with(USER_SCOPE) {
        return Err(ApiError::bad_request(
            "id: ids starting with ~ are reserved for users' own reminders",
        ));
    }
    Ok(())
}

fn body_text(req: &Request) -> Result<&str, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
        ));
    }
    std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("body is not UTF-8"))
}

fn json_body(req: &Request) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_str(body_text(req)?).map_err(|_| ApiError::bad_request("body is not JSON"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::bad_request("body must be a JSON object"))
    }
}

/// Decodes `%XX` escapes in a path segment (`course%3A42`). `None` on a malformed escape.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_path_segments() {
        assert_eq!(percent_decode("course%3A42").as_deref(), Some("course:42"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
