//! Posting frames to connections through the API Gateway management API, and fan-out.
//!
//! Every post has one of four outcomes, and each has exactly one consequence:
//! delivered; gone (410: remove the connection now); retryable (429, 5xx, timeouts: hand the
//! connection id to the retry queue); failed for good (403/413: logged and counted — the
//! notification is still in the log for `resume`).

use std::collections::HashSet;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

pub mod chain;
mod poster;

pub use poster::{PostOutcome, Poster, PosterError};

/// What happened to one fan-out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanoutReport {
    pub delivered: usize,
    pub gone: Vec<String>,
    pub retry: Vec<String>,
    pub failed: usize,
}

impl FanoutReport {
    pub fn merge(&mut self, other: FanoutReport) {
        self.delivered += other.delivered;
        self.gone.extend(other.gone);
        self.retry.extend(other.retry);
        self.failed += other.failed;
    }
}

/// Posts `frame` to every connection with at most `concurrency` posts in flight.
///
/// Each post is its own task: the SDK's per-request work (endpoint resolution, SigV4 signing,
/// response parsing) then runs on every runtime thread instead of the one thread that would poll
/// a `buffer_unordered` of plain futures — on a multi-vCPU Lambda that is the difference between
/// one core's worth of posts per second and all of them.
pub async fn fan_out<I>(poster: &Poster, connections: I, frame: &str, concurrency: usize) -> FanoutReport
where
    I: IntoIterator<Item = String>,
{
    let frame: std::sync::Arc<str> = std::sync::Arc::from(frame);
    let mut results = futures_util::stream::iter(connections)
        .map(|id| {
            let (poster, frame, task_id) = (poster.clone(), frame.clone(), id.clone());
            let task = tokio::spawn(async move { poster.post(&task_id, &frame).await });
            async move {
                // A panicked post is treated like a transient failure: the connection is retried.
                let outcome = task.await.unwrap_or_else(|e| PostOutcome::Retryable(e.to_string()));
                (id, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut report = FanoutReport::default();
    while let Some((id, outcome)) = results.next().await {
        match outcome {
            PostOutcome::Delivered => report.delivered += 1,
            PostOutcome::Gone => report.gone.push(id),
            PostOutcome::Retryable(reason) => {
                tracing::debug!(connection = %id, %reason, "post will be retried");
                report.retry.push(id);
            }
            PostOutcome::Failed(reason) => {
                tracing::warn!(connection = %id, %reason, "post failed permanently");
                report.failed += 1;
            }
        }
    }
    report
}

/// What became of connections a post could not reach for now (429, 5xx, timeouts).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Took the frame when posted again.
    pub delivered: usize,
    /// Answered 410 when posted again (and closed, in case the socket is in fact open).
    pub gone: Vec<String>,
    /// Closed: their clients reconnect and resume.
    pub closed: usize,
    /// Could not even be closed: the retry queue tries again.
    pub unclosed: Vec<String>,
}

/// How long to wait before posting to a connection again, so a momentary throttle passes.
const REPOST_PAUSE_MS: u64 = 100;

/// Settles a logged frame's retryable failures while the frame is young: one more post after a
/// short pause, then a close for whoever still could not take it. A frame is never posted late:
/// a client holding a later cursor would resume past it (see `horizon`), so a connection that
/// misses a frame is closed, and its client's resume brings the frame.
pub async fn post_or_close(poster: &Poster, connections: Vec<String>, frame: &str, concurrency: usize) -> Unreachable {
    let mut out = Unreachable::default();
    if connections.is_empty() {
        return out;
    }
    tokio::time::sleep(std::time::Duration::from_millis(
        REPOST_PAUSE_MS + crate::io::store::jitter(REPOST_PAUSE_MS),
    ))
    .await;
    let again = fan_out(poster, connections, frame, concurrency).await;
    out.delivered = again.delivered;
    // A 410 now is closed like one in the first round (see `close_gone_sockets`): a socket that
    // is in fact open would go on receiving newer frames without this one.
    let to_close = again.gone.iter().cloned().chain(again.retry).collect();
    let gone: HashSet<String> = again.gone.into_iter().collect();
    for (id, outcome) in disconnect_all(poster, to_close, concurrency).await {
        match outcome {
            PostOutcome::Delivered | PostOutcome::Gone if gone.contains(&id) => out.gone.push(id),
            PostOutcome::Delivered | PostOutcome::Gone => out.closed += 1,
            PostOutcome::Retryable(reason) | PostOutcome::Failed(reason) => {
                tracing::warn!(connection = %id, %reason, "could not close a connection that missed a frame; the retry queue tries again");
                out.unclosed.push(id);
            }
        }
    }
    out
}

/// Closes connections that answered 410 to a logged frame. Normally they are gone and this
/// answers 410 again; one that is in fact still open (the management API's view lagging behind
/// the socket, or a fault) would otherwise go on receiving newer frames without this one, and a
/// client resuming from one of those would never read it (see `horizon`). Returns how many
/// could not be closed: the caller then records no completion time for the fan-out, since a
/// resume spares entries by it (`replay::spare`).
pub async fn close_gone_sockets(poster: &Poster, connections: &[String], concurrency: usize) -> usize {
    let mut unclosed = 0;
    for (id, outcome) in disconnect_all(poster, connections.to_vec(), concurrency).await {
        match outcome {
            PostOutcome::Gone => {}
            PostOutcome::Delivered => tracing::info!(connection = %id, "a connection that answered 410 was still open; closed it"),
            PostOutcome::Retryable(reason) | PostOutcome::Failed(reason) => {
                unclosed += 1;
                tracing::warn!(connection = %id, %reason, "could not close a connection that answered 410")
            }
        }
    }
    unclosed
}

/// `DELETE @connections/{id}` for each, at most `concurrency` at once.
async fn disconnect_all(poster: &Poster, connections: Vec<String>, concurrency: usize) -> Vec<(String, PostOutcome)> {
    futures_util::stream::iter(connections)
        .map(|id| {
            let poster = poster.clone();
            async move {
                let outcome = poster.disconnect(&id).await;
                (id, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

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

/// A job on the fan-out queue for one membership shard of a big audience (see [`chain`]): a
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
}

/// What Herald sends itself on its internal queue (never producer input: only Herald's roles
/// may send there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum InternalMessage {
    Presence(PresenceCheck),
    Escalation(EscalationCheck),
    Job(FanoutJob),
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let v: InternalMessage = serde_json::from_str(&serde_json::to_string(&escalation).unwrap()).unwrap();
        assert_eq!(v, InternalMessage::Escalation(escalation));
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
        };
        let again: RetryJob = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(job, again);
    }
}
