//! The messages Herald sends itself over SQS, one type each: retries of posts and pushes (the
//! retry queue), and fan-out jobs, presence checks and escalation checks (the internal queue).
//! They live with the queue that carries them, so a sender and its consumer read one schema.

use serde::{Deserialize, Serialize};

use crate::domain::notification::Urgency;
use crate::io::store::MemberRow;

/// A retry-queue message: the frame and only the connections that still need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryJob {
    pub tenant: String,
    pub id: String,
    pub frame: String,
    pub connections: Vec<String>,
    /// 1 for the first retry.
    pub attempt: u32,
    /// Set for an entry of a latest-value stream: the retry is dropped once a later entry of
    /// the key exists (it was pushed, or will be, in its place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<CollapseRef>,
    /// The membership rows the connections were posted from: a round that finds one gone for
    /// good without its connection item removes them, as the first fan-out does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<MemberRow>,
}

/// Which latest-value stream entry a frame is: topic, key and the entry's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollapseRef {
    pub topic: String,
    pub key: String,
    pub cursor: String,
}

/// Exponential backoff with jitter for attempt `n` (1-based), within SQS's 15-minute delay cap:
/// 2^n seconds, then a random point in its upper half, so synchronized failures spread out.
pub fn retry_delay_seconds(attempt: u32) -> i32 {
    let ceiling = 1u64 << attempt.clamp(1, 9);
    let half = ceiling / 2;
    (half + crate::io::store::jitter(half + 1)).min(900) as i32
}

/// A job on the internal queue for one membership shard of a big audience (see `delivery::chain`): a
/// walk (no `connections`: read the shard after `after`, queue post jobs and the next walk) or a
/// post job (post to `connections`, read from that shard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutJob {
    pub tenant: String,
    pub id: String,
    pub group_key: String,
    pub shard: u16,
    /// Continue after this connection id.
    pub after: Option<String>,
    pub frame: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<String>,
    /// Those of `connections` that have not caught up: they get the frame without its cursor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub behind: Vec<String>,
    /// A connection the frame is not posted to (a publisher that did not ask for `echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<String>,
    /// An ephemeral frame (client publish, not logged): failed posts are not retried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
}

impl FanoutJob {
    /// The key that claims this job, so a redelivered job does not post its page twice. A walk
    /// is known by where it starts; a post job by its first connection (a walk run again from the
    /// same position cuts the same pages).
    pub fn claim_key(&self) -> String {
        match self.connections.first() {
            None => format!("{}#job#{}#{}", self.id, self.shard, self.after.as_deref().unwrap_or("")),
            Some(first) => format!("{}#post#{}#{}", self.id, self.shard, first),
        }
    }
}

/// A presence check on the internal queue, delayed by the grace period: "`user` left `group`
/// at `left_at`; if they are still away, announce them offline".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceCheck {
    pub tenant: String,
    pub group: String,
    pub user: String,
    pub left_at: u64,
}

/// An escalation check on the internal queue (see `escalation`): "if `user` has not read
/// notification `id` by `due`, hand it to the escalation queue". It carries what the
/// escalation message needs, so the check never depends on the log entry still being there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EscalationCheck {
    pub tenant: String,
    pub id: String,
    pub user: String,
    /// The entry's cursor in the user's log: a read cursor at or past it counts as read.
    pub cursor: String,
    /// When it is due (epoch seconds).
    pub due: i64,
    /// The notification as the user's devices received it (the frame without `type`).
    pub notification: serde_json::Value,
    /// Set on a Web Push held back by the user's quiet hours (#33): at `due`, push the
    /// notification's current version instead of escalating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushLater>,
}

/// A Web Push waiting for the end of quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushLater {
    pub urgency: crate::domain::notification::Urgency,
    pub ttl_seconds: u64,
}

/// A receipt flush on the internal queue, a second after a `read` that came within a second of
/// the member's last pushed receipt: "push `reader`'s latest receipt in `group` unless it was
/// pushed meanwhile" (`reader`, not `user`: a presence check never parses as one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptFlush {
    pub tenant: String,
    pub group: String,
    pub reader: String,
}

/// What Herald sends itself on its internal queue (never producer input: only Herald's roles
/// may send there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum InternalMessage {
    Presence(PresenceCheck),
    Escalation(EscalationCheck),
    Receipt(ReceiptFlush),
    Job(FanoutJob),
}

/// A push to try again (retry queue): which subscription, by its key, and the plaintext. The
/// subscription is read again when the job runs, so one removed meanwhile is not pushed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushJob {
    pub tenant: String,
    pub user: String,
    /// The notification id (logs).
    pub id: String,
    /// [`endpoint_key`](crate::io::push::endpoint_key) of the subscription.
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
    use crate::io::push::endpoint_key;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..=12 {
            let d = retry_delay_seconds(attempt);
            let ceiling = 1i32 << attempt.clamp(1, 9);
            assert!(d >= ceiling / 2 && d <= ceiling.min(900), "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn internal_messages_are_told_apart() {
        let check = PresenceCheck {
            tenant: "t".into(),
            group: "room:7".into(),
            user: "u1".into(),
            left_at: 5,
        };
        let v: InternalMessage = serde_json::from_str(&serde_json::to_string(&check).unwrap()).unwrap();
        assert_eq!(v, InternalMessage::Presence(check));
        let job = FanoutJob {
            tenant: "t".into(),
            id: "n".into(),
            group_key: "t#room:7".into(),
            shard: 1,
            after: None,
            frame: "{}".into(),
            connections: Vec::new(),
            behind: Vec::new(),
            exclude: None,
            ephemeral: false,
        };
        let v: InternalMessage = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(v, InternalMessage::Job(job.clone()));
        let escalation = EscalationCheck {
            tenant: "t".into(),
            id: "n".into(),
            user: "u1".into(),
            cursor: "c".into(),
            due: 7,
            notification: serde_json::json!({"id": "n", "event": "e"}),
            push: None,
        };
        let v: InternalMessage = serde_json::from_str(&serde_json::to_string(&escalation).unwrap()).unwrap();
        assert_eq!(v, InternalMessage::Escalation(escalation));
        let flush = ReceiptFlush {
            tenant: "t".into(),
            group: "room:7".into(),
            reader: "u1".into(),
        };
        let v: InternalMessage = serde_json::from_str(&serde_json::to_string(&flush).unwrap()).unwrap();
        assert_eq!(v, InternalMessage::Receipt(flush));
        // A post job (a walk's page) too.
        let post = FanoutJob {
            connections: vec!["c1".into(), "c2".into()],
            behind: vec!["c2".into()],
            ..job
        };
        let v: InternalMessage = serde_json::from_str(&serde_json::to_string(&post).unwrap()).unwrap();
        assert_eq!(v, InternalMessage::Job(post));
    }

    #[test]
    fn jobs_round_trip() {
        let job = RetryJob {
            tenant: "t".into(),
            id: "n".into(),
            frame: "{}".into(),
            connections: vec!["a".into()],
            attempt: 2,
            collapse: None,
            rows: vec![MemberRow {
                connection: "a".into(),
                group_key: "t#course:1".into(),
                shard: 3,
            }],
        };
        let again: RetryJob = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(job, again);
    }

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
            rows: Vec::new(),
        };
        assert!(serde_json::from_str::<PushRetry>(&serde_json::to_string(&post).unwrap()).is_err());
    }
}
