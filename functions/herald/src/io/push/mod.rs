//! Web Push (RFC 8030, RFC 8291, RFC 8292): reaching users who have no open socket.
//!
//! - [`subscription`]: a browser's `PushSubscription`, validated (pure);
//! - [`payload`]: the notification frame cut to one push message, and the `Topic` (pure);
//! - [`ece`]: the `aes128gcm` encryption of RFC 8291 (pure);
//! - [`vapid`]: the application server's ES256 token (pure);
//! - [`sender`]: one push to one push service (I/O).
//!
//! Who is pushed to, and what happens after each answer, is `offline`'s (it has the store and
//! the queue).

pub mod ece;
pub mod payload;
pub mod sender;
pub mod subscription;
pub mod vapid;

use serde::{Deserialize, Serialize};

pub use sender::{PushMessage, PushOutcome, PushSender, SenderError};
pub use subscription::{
    DEFAULT_PUSH_HOSTS, EndpointPolicy, SUBSCRIPTION_DAYS, Subscription, SubscriptionError, endpoint_key, parse_endpoint,
    parse_subscription,
};
pub use vapid::{Vapid, VapidError};

use crate::domain::notification::Urgency;

/// A push to try again (retry queue): which subscription, by its key, and the plaintext. The
/// subscription is read again when the job runs, so one removed meanwhile is not pushed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushJob {
    pub tenant: String,
    pub user: String,
    /// The notification id (logs).
    pub id: String,
    /// [`endpoint_key`] of the subscription.
    pub subscription: String,
    pub payload: String,
    pub ttl_seconds: u64,
    pub urgency: Urgency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// 1 for the first retry.
    pub attempt: u32,
}

/// The retry queue's message for a push: `{"push": job}`, never taken for a post retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRetry {
    pub push: PushJob,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::delivery::RetryJob;

    /// Post retries and push retries share the retry queue: neither can be taken for the other.
    #[test]
    fn push_retries_and_post_retries_never_parse_as_each_other() {
        let push = PushRetry {
            push: PushJob {
                tenant: "acme".into(),
                user: "u1".into(),
                id: "n1".into(),
                subscription: endpoint_key("https://p.example/x"),
                payload: r#"{"type":"notification"}"#.into(),
                ttl_seconds: 60,
                urgency: Urgency::High,
                topic: Some("score".into()),
                attempt: 1,
            },
        };
        let body = serde_json::to_string(&push).unwrap();
        assert!(body.contains(r#""urgency":"high""#), "{body}");
        assert_eq!(serde_json::from_str::<PushRetry>(&body).unwrap(), push);
        assert!(serde_json::from_str::<RetryJob>(&body).is_err());
        let post = RetryJob {
            tenant: "acme".into(),
            id: "n1".into(),
            frame: "{}".into(),
            connections: vec!["c1".into()],
            attempt: 1,
            collapse: None,
        };
        assert!(serde_json::from_str::<PushRetry>(&serde_json::to_string(&post).unwrap()).is_err());
    }
}
