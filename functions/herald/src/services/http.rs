//! The HTTP API's edges (`lambda_http`, payload format 2.0): reading a request (the caller's
//! bearer token, path segments, its body, capped, UTF-8, a JSON object; paging limits), and the
//! answer: JSON, or `{"error":{"code","message"}}` with the status each failure below maps onto,
//! never an internal name or trace.

use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

use crate::domain::auth::{AuthError, Principal, Verifier};
use crate::io::queue::QueueError;
use crate::io::store::StoreError;
use crate::services::chat::ChatError;
use crate::services::membership::PresenceListError;
use crate::services::presence::PresenceError;
use crate::services::reminders::ReminderError;
use crate::services::schedule::DeferError;
use crate::services::submissions::SubmitError;
use crate::services::web_push::SubscribeError;

/// The most a request body may hold (a notification is at most 64 KB too).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A route's answer: a status and a JSON body, if any.
pub type ApiResult = Result<(StatusCode, Option<Value>), ApiError>;

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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// The caller spent its request budget: 429 with `Retry-After` (whole seconds, at least 1).
    pub fn over_budget(retry_after_ms: u64) -> Self {
        Self {
            retry_after: Some(retry_after_ms.div_ceil(1000).max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("request budget exceeded; try again in {retry_after_ms} ms"),
            )
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn internal() -> Self {
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

impl From<crate::services::inbox::InboxError> for ApiError {
    fn from(e: crate::services::inbox::InboxError) -> Self {
        match e {
            crate::services::inbox::InboxError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "inbox failure");
                ApiError::internal()
            }
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

impl From<ReminderError> for ApiError {
    fn from(e: ReminderError) -> Self {
        match e {
            ReminderError::BadRequest(m) => ApiError::bad_request(m),
            ReminderError::Forbidden(m) => ApiError::forbidden(m),
            ReminderError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ReminderError::TooMany(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m),
            ReminderError::NotFound => ApiError::not_found("no such reminder"),
            ReminderError::Store(s) => s.into(),
            ReminderError::Defer(d) => d.into(),
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Invalid(m) => ApiError::bad_request(m),
            SubscribeError::Store(s) => s.into(),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::BadRequest(m) => ApiError::bad_request(m),
            SubmitError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            SubmitError::Forbidden(m) => ApiError::forbidden(m),
            SubmitError::NotFound(m) => ApiError::not_found(m),
            SubmitError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            SubmitError::Store(s) => s.into(),
            SubmitError::Queue(q) => q.into(),
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

impl From<PresenceListError> for ApiError {
    fn from(e: PresenceListError) -> Self {
        match e {
            PresenceListError::Forbidden(m) => ApiError::forbidden(m),
            PresenceListError::Store(s) => s.into(),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::BadRequest(m) => ApiError::bad_request(m),
            ChatError::Forbidden(m) => ApiError::forbidden(m),
            ChatError::NotFound(m) => ApiError::not_found(m),
            ChatError::RateLimited(ms) => ApiError::over_budget(ms),
            ChatError::Store(s) => s.into(),
            ChatError::Queue(q) => q.into(),
            ChatError::Presence(p) => p.into(),
            ChatError::Objects(o) => {
                tracing::error!(error = %o, "presigning failed");
                ApiError::internal()
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    }
}

/// The caller of a `Authorization: Bearer JWT` request, verified as the WebSocket authorizer
/// verifies a handshake's token.
pub async fn authenticate(verifier: &Verifier, req: &Request) -> Result<Principal, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(AuthError::Malformed)?;
    Ok(verifier.verify_refreshing(token.trim()).await?)
}

/// The request path's segments, percent-decoded (`/groups/course%3A42/history`).
pub fn path_segments(req: &Request) -> Result<Vec<String>, ApiError> {
    let path = req.raw_http_path().to_owned();
    let path = if path.is_empty() { req.uri().path().to_owned() } else { path };
    path.trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Option<_>>()
        .ok_or_else(|| ApiError::bad_request("malformed path"))
}

/// When API Gateway received the request (epoch ms; 0 outside API Gateway): what budgets are
/// charged at.
pub fn received_at(req: &Request) -> i64 {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.time_epoch,
        _ => 0,
    }
}

/// The response of a route's answer; an error becomes its JSON error (with `Retry-After` on a
/// 429 of the caller's budget).
pub fn respond(result: ApiResult) -> Response<Body> {
    let mut retry_after = None;
    let (status, body) = match result {
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

/// A `limit` query parameter: `default` when absent, else a number in `1..=max`.
pub fn page_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={max}"))),
    }
}

pub fn body_text(req: &Request) -> Result<&str, ApiError> {
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

pub fn json_body(req: &Request) -> Result<Value, ApiError> {
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
