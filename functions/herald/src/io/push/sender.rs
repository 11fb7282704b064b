//! Sends one encrypted push to one subscription (RFC 8030 §5) over Herald's one HTTP client
//! configuration (`tls`), and maps the push service's answer to one of four outcomes, as
//! `delivery::Poster` does for `@connections`.

use std::sync::Arc;
use std::time::Duration;

use super::ece;
use super::subscription::{EndpointPolicy, Subscription};
use super::vapid::Vapid;
use crate::domain::notification::Urgency;

/// What the push service said; each outcome has exactly one consequence in the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// 201 (or another 2xx): accepted.
    Delivered,
    /// 404/410: the subscription is gone; remove it now.
    Gone,
    /// 429, 5xx, timeouts, resets: worth another attempt later; `after`: the push service's
    /// `Retry-After`, in seconds, when it gave one (the retry waits at least that long).
    Retryable { reason: String, after: Option<u32> },
    /// Other 4xx (400, 403, 413) or a subscription that cannot be encrypted for: another attempt
    /// would fail the same way.
    Failed(String),
    /// The endpoint is not on an allowed push service (stored before the host list was narrowed,
    /// or before there was one): nothing was sent; remove the subscription.
    Refused,
}

#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("building the HTTP client for push services: {0}")]
    Client(#[source] reqwest::Error),
    #[error("TLS for push services: {0}")]
    Tls(#[source] Arc<crate::domain::tls::TlsError>),
}

/// One push: the plaintext and its headers.
#[derive(Debug, Clone, Copy)]
pub struct PushMessage<'a> {
    pub payload: &'a [u8],
    pub ttl_seconds: u64,
    pub urgency: Urgency,
    pub topic: Option<&'a str>,
}

/// Push services keep a message at most about four weeks; a longer TTL is cut to that.
pub const MAX_TTL_SECONDS: u64 = 28 * 24 * 3600;

#[derive(Clone, Debug)]
pub struct PushSender {
    http: reqwest::Client,
    vapid: Arc<Vapid>,
    policy: Arc<EndpointPolicy>,
}

impl PushSender {
    pub fn new(vapid: Vapid, policy: EndpointPolicy) -> Result<Self, SenderError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::domain::tls::client_config().map_err(SenderError::Tls)?)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            // A push service answers; it never sends Herald elsewhere. Following a redirect
            // would let an allowed host (or whoever answers for it) point Herald's POST at any
            // address, past the endpoint check.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(SenderError::Client)?;
        Ok(Self {
            http,
            vapid: Arc::new(vapid),
            policy: Arc::new(policy),
        })
    }

    pub fn public_key(&self) -> &str {
        self.vapid.public_key()
    }

    pub async fn send(&self, sub: &Subscription, msg: PushMessage<'_>) -> PushOutcome {
        if self.policy.check(&sub.endpoint).is_err() {
            return PushOutcome::Refused;
        }
        let Some((p256dh, auth)) = sub.keys() else {
            return PushOutcome::Failed("the stored subscription's keys do not decode".into());
        };
        let body = match ece::encrypt(msg.payload, &p256dh, &auth) {
            Ok(b) => b,
            Err(e) => return PushOutcome::Failed(e.to_string()),
        };
        let authorization = match self.vapid.authorization(&sub.endpoint, chrono::Utc::now().timestamp()) {
            Ok(a) => a,
            Err(e) => return PushOutcome::Failed(e.to_string()),
        };
        let mut req = self
            .http
            .post(&sub.endpoint)
            .header("authorization", authorization)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("ttl", msg.ttl_seconds.min(MAX_TTL_SECONDS).to_string())
            .header("urgency", msg.urgency.as_str());
        if let Some(topic) = msg.topic {
            req = req.header("topic", topic);
        }
        // Only the status is read: the body is dropped unread, so no answer's size matters.
        // Errors lose their URL: the endpoint is a bearer capability for the user's device and
        // must not reach the logs.
        match req.body(body).send().await {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after_seconds(v, chrono::Utc::now()));
                outcome(resp.status().as_u16(), retry_after)
            }
            Err(e) => PushOutcome::Retryable {
                reason: e.without_url().to_string(),
                after: None,
            },
        }
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date; a date in the past is 0.
fn retry_after_seconds(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<u32> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse::<u64>().map_or(u32::MAX, |s| s.min(u64::from(u32::MAX)) as u32));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.timestamp() - now.timestamp()).clamp(0, i64::from(u32::MAX)) as u32)
}

fn outcome(status: u16, retry_after: Option<u32>) -> PushOutcome {
    match status {
        200..=299 => PushOutcome::Delivered,
        404 | 410 => PushOutcome::Gone,
        429 | 500..=599 => PushOutcome::Retryable {
            reason: format!("push service answered {status}"),
            after: retry_after,
        },
        300..=399 => PushOutcome::Failed(format!("push service answered a redirect ({status}); not followed")),
        _ => PushOutcome::Failed(format!("push service answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_has_one_outcome() {
        assert_eq!(outcome(201, None), PushOutcome::Delivered);
        assert_eq!(outcome(410, None), PushOutcome::Gone);
        assert_eq!(outcome(404, None), PushOutcome::Gone);
        assert!(matches!(outcome(429, Some(30)), PushOutcome::Retryable { after: Some(30), .. }));
        assert!(matches!(outcome(503, None), PushOutcome::Retryable { after: None, .. }));
        assert!(matches!(outcome(413, None), PushOutcome::Failed(_)));
        assert!(matches!(outcome(400, None), PushOutcome::Failed(_)));
        assert!(matches!(outcome(307, None), PushOutcome::Failed(_)));
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = chrono::DateTime::parse_from_rfc2822("Sun, 06 Dec 2026 06:00:00 GMT")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after_seconds("120", now), Some(120));
        assert_eq!(retry_after_seconds(" 0 ", now), Some(0));
        assert_eq!(retry_after_seconds("99999999999999999999", now), Some(u32::MAX));
        assert_eq!(retry_after_seconds("Sun, 06 Dec 2026 06:01:30 GMT", now), Some(90));
        assert_eq!(retry_after_seconds("Sun, 06 Dec 2026 05:00:00 GMT", now), Some(0));
        assert_eq!(retry_after_seconds("-5", now), None);
        assert_eq!(retry_after_seconds("soon", now), None);
    }
}
