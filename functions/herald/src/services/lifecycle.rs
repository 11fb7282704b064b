//! The lifecycle every logged notification runs, whoever sent it: claim and log, fan out,
//! schedule the escalation checks, Web Push the users no connection took, finish the claim.
//!
//! A producer's notification (`notify`: SQS and `POST /notifications`) and a member's logged
//! publish (`publish`: the socket) differ only in what they ask of it, so the order of the steps,
//! which is what makes redelivery safe, is written once, here. Retry rounds post what a fan-out
//! left (`retries`); the claim is finished before they run, and nothing of the lifecycle remains
//! to them.

use crate::domain::cursor::Cursor;
use crate::domain::groups::Group;
use crate::domain::notification::{Content, LogEntry, PushRequest};
use crate::services::broadcast::{BroadcastError, Broadcaster, FanoutSummary, Logged, Outgoing, Reach};
use crate::services::escalation::{Escalation, EscalationError};
use crate::services::web_push::{PushError, PushSummary, Pusher, UserPush};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    #[error(transparent)]
    Escalation(#[from] EscalationError),
    #[error(transparent)]
    Push(#[from] PushError),
    /// A send asked for escalation of a lifecycle built without it: a wiring fault of the
    /// function, never the sender's.
    #[error("this function does not schedule escalations")]
    NoEscalation,
}

impl LifecycleError {
    /// How long until another invocation's claim on this work ends, when that is the failure.
    pub fn lease_left_ms(&self) -> Option<u64> {
        match self {
            LifecycleError::Broadcast(BroadcastError::InProgress { lease_left_ms })
            | LifecycleError::Escalation(EscalationError::InProgress { lease_left_ms }) => Some(*lease_left_ms),
            _ => None,
        }
    }
}

/// One notification to log and deliver.
#[derive(Debug, Clone)]
pub struct Send<'a> {
    pub tenant: &'a str,
    /// The claimed idempotency key.
    pub id: &'a str,
    pub topics: Vec<Group>,
    pub content: &'a Content,
    /// When the log entries expire (epoch seconds).
    pub expires: i64,
    pub reach: Reach<'a>,
    /// Escalate the user entries unread after this many seconds.
    pub escalate_after: Option<u64>,
    /// Web Push the targeted users, with the push's TTL in seconds.
    pub push: Option<(PushRequest, u64)>,
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Logged and delivered before (same id); the cursor it was logged under.
    Duplicate(Cursor),
    Delivered {
        /// The cursor of its entries; `None` when a later value of its collapse key was logged
        /// first and nothing was delivered.
        cursor: Option<Cursor>,
        summary: FanoutSummary,
        pushed: PushSummary,
    },
}

#[derive(Clone, Debug)]
pub struct Lifecycle {
    broadcaster: Broadcaster,
    escalation: Option<Escalation>,
    pusher: Option<Pusher>,
}

impl Lifecycle {
    /// Logging and fan-out only: a send that asks for escalation is refused, and Web Push is off.
    pub fn new(broadcaster: Broadcaster) -> Self {
        Self {
            broadcaster,
            escalation: None,
            pusher: None,
        }
    }

    pub fn with_escalation(mut self, escalation: Escalation) -> Self {
        self.escalation = Some(escalation);
        self
    }

    pub fn with_push(mut self, pusher: Pusher) -> Self {
        self.pusher = Some(pusher);
        self
    }

    /// The fan-out service, for the internal queue's jobs.
    pub fn broadcaster(&self) -> &Broadcaster {
        &self.broadcaster
    }

    /// Runs the lifecycle of `send`. Each step is done before the claim is finished, so a
    /// failure anywhere leaves the id unfinished and its redelivery runs the steps again (at
    /// least once; the escalation check's once-guard absorbs a second schedule).
    pub async fn send(&self, send: Send<'_>) -> Result<Sent, LifecycleError> {
        let b = &self.broadcaster;
        let entries = match b.log(send.tenant, send.id, send.topics, send.content, send.expires).await? {
            Logged::Duplicate(cursor) => return Ok(Sent::Duplicate(cursor)),
            Logged::Entries(entries) => entries,
        };
        let frames: Vec<Outgoing> = entries.iter().map(|(g, e)| Outgoing::entry(g.clone(), e)).collect();
        let summary = b.fan_out(send.tenant, send.id, &frames, send.reach).await?;
        if let Some(after) = send.escalate_after {
            let escalation = self.escalation.as_ref().ok_or(LifecycleError::NoEscalation)?;
            escalation.schedule(send.tenant, send.id, &entries, after).await?;
        }
        let pushed = match (send.push, &self.pusher) {
            (Some((request, ttl)), Some(pusher)) => {
                let users = unreached_users(&entries, &summary, request.always);
                pusher.push(send.tenant, send.id, &users, request, ttl).await?
            }
            _ => PushSummary::default(),
        };
        // Where the entries are, for a producer's later update or recall (`inbox`).
        b.finish_logged(send.tenant, send.id, &summary, &entries).await?;
        Ok(Sent::Delivered {
            cursor: entries.first().map(|(_, e)| e.cursor),
            summary,
            pushed,
        })
    }
}

/// The personal entries to Web Push: those no live connection took, or all with `always`.
fn unreached_users<'e>(entries: &'e [(Group, LogEntry)], summary: &FanoutSummary, always: bool) -> Vec<UserPush<'e>> {
    entries
        .iter()
        .filter_map(|(topic, entry)| match topic {
            Group::User(user) if always || summary.unreached.contains(user) => Some(UserPush { user, entry }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notification::Content;

    fn entry(topic: &str) -> (Group, LogEntry) {
        let group = Group::parse(topic).unwrap();
        let entry = LogEntry {
            id: "n1".into(),
            cursor: Cursor::MIN,
            topic: topic.into(),
            content: Content::default(),
            created_at: "2026-12-06T00:00:00Z".into(),
        };
        (group, entry)
    }

    #[test]
    fn only_unreached_users_are_pushed_unless_always() {
        let entries = vec![entry("user:a"), entry("user:b"), entry("tenant")];
        let summary = FanoutSummary {
            unreached: ["b".to_string()].into_iter().collect(),
            ..Default::default()
        };
        let users: Vec<&str> = unreached_users(&entries, &summary, false).iter().map(|u| u.user).collect();
        assert_eq!(users, vec!["b"]);
        let all: Vec<&str> = unreached_users(&entries, &summary, true).iter().map(|u| u.user).collect();
        assert_eq!(all, vec!["a", "b"], "a group topic is never pushed");
    }
}
