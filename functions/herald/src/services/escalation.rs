//! Escalation (DESIGN.md, "Reaching users who are not connected"): a producer's
//! `"escalate":{"afterSeconds":n}` asks that, if none of a targeted user's devices has read or
//! acked the notification `n` seconds after it was logged, one message
//! `{"id","tenant","user","notification":{...}}` goes to the escalation queue, for the
//! operator's own email/SMS worker. Which targets escalate and the bounds of `n` are producer
//! input rules, checked where producer messages are parsed (`notification`).
//!
//! **The timer.** After the notification is logged (and before dispatch marks it finished, so a
//! redelivery after a crash schedules again), one [`EscalationCheck`] per targeted user is
//! put where it comes back when due:
//! - up to SQS's 15-minute delay: on Herald's internal queue with that delay, like a presence
//!   check. That queue only takes Herald's own messages, so no producer can forge a check.
//! - longer: a one-time EventBridge Scheduler schedule (the reminders' group, role and target)
//!   whose input is the check; the `reminder` function puts it on the internal queue when it
//!   fires. Re-queuing with the maximum delay until due would need up to 672 hops for 7 days,
//!   and Lambda's recursive loop detection stops an SQS → Lambda → same-queue chain after about
//!   16 of them (the fan-out chain keeps to eight for that reason), so long waits go to
//!   Scheduler, which has no such limit and costs one schedule per (notification, user),
//!   deleted once it fired.
//!
//! **At the deadline** the check is cancelled by a read: a read mark for the id (`ack`,
//! `POST /notifications/read` with `ids`) or the user's read cursor at or past the entry. It is
//! checked when the check fires, with strongly consistent reads, rather than by deleting the
//! pending check: a delayed SQS message cannot be taken back, and checking at fire time also
//! covers a read that races the scheduling.
//!
//! **Exactly once per (notification, user)**, under redelivery and concurrent copies of a check
//! (a redelivered dispatch schedules again; SQS and Scheduler deliver at least once): the
//! escalation is claimed with a conditional write before it is sent (the idempotency claim under
//! `{id}␟escalate␟{user}`, U+001F separators, which producer ids cannot contain, so no producer
//! can claim it first), then marked done. A copy that finds it done does nothing; one that finds
//! it claimed by a live invocation is redelivered after the lease. Only a crash between the send
//! and the mark can repeat the message (after the lease), which is why it carries `id` and
//! `user` for the worker to deduplicate on.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use crate::domain::config::Limits;
use crate::domain::cursor::Cursor;
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{Content, LogEntry};
use crate::domain::preferences::Channel;
use crate::io::queue::{EscalationCheck, MAX_DELAY_SECONDS, Queue, QueueError};
use crate::io::store::{Claim, Store, StoreError, epoch_seconds};
use crate::services::preferences::{self, Gate};
use crate::services::schedule::{ScheduleError, Scheduler, schedule_name};

#[derive(Debug, thiserror::Error)]
pub enum EscalationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("an escalation check could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("another invocation is escalating this notification; retry in {lease_left_ms} ms")]
    InProgress { lease_left_ms: u64 },
}

/// The key of a schedule's input that carries an escalation check (the `reminder` function
/// tells it from a deferred notification by it).
pub const SCHEDULE_INPUT_KEY: &str = "escalationCheck";

/// Checks scheduled at once (one SendMessage or CreateSchedule each; `users` lists up to 1000).
const SENDS_IN_FLIGHT: usize = 16;

/// What a check found when it came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Not due yet (an early copy): put back until due.
    NotYet,
    /// Read or acked in time: nothing sent.
    Read,
    /// Sent to the escalation queue now.
    Escalated,
    /// Sent before (a redelivered or concurrent copy): nothing sent.
    Duplicate,
    /// The producer recalled the notification: nothing sent.
    Recalled,
    /// The user turned the category off for escalation: nothing sent.
    Muted,
}

/// What preferences look at of a notification frame: its event and `critical`.
pub fn content_of(notification: &Value) -> Content {
    Content {
        event: notification["event"].as_str().unwrap_or_default().to_owned(),
        critical: notification["critical"].as_bool().unwrap_or(false),
        ..Content::default()
    }
}

/// Where a check waits: the internal queue with a delay, or a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Queue { delay_seconds: u64 },
    Schedule,
}

/// The pure rule: a wait SQS can delay goes on the queue; a longer one to Scheduler.
pub fn timer_for(wait_seconds: i64) -> Timer {
    if wait_seconds <= MAX_DELAY_SECONDS {
        Timer::Queue {
            delay_seconds: wait_seconds.max(0) as u64,
        }
    } else {
        Timer::Schedule
    }
}

/// The escalation message: `{"id","tenant","user","notification":{...}}`.
pub fn message(check: &EscalationCheck) -> String {
    serde_json::json!({
        "id": check.id,
        "tenant": check.tenant,
        "user": check.user,
        "notification": check.notification,
    })
    .to_string()
}

/// The notification as the user's devices got it: the entry's frame without `type`.
pub fn notification_of(entry: &LogEntry) -> Value {
    let mut v: Value = serde_json::from_str(&entry.frame(false)).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("type");
    }
    v
}

/// The once-guard's key (an idempotency claim): U+001F cannot occur in a producer id.
fn claim_key(id: &str, user: &str) -> String {
    format!("{id}\u{1f}escalate\u{1f}{user}")
}

/// The schedule of a long wait: one per (notification, user), so scheduling again (a
/// redelivered dispatch) moves the same schedule instead of adding one.
pub fn schedule_name_for(tenant: &str, id: &str, user: &str) -> String {
    schedule_name(tenant, &claim_key(id, user))
}

#[derive(Clone, Debug)]
pub struct Escalation {
    store: Store,
    queue: Queue,
    scheduler: Scheduler,
    lease_ms: u64,
    remember_seconds: u64,
    function: &'static str,
}

impl Escalation {
    pub fn new(function: &'static str, store: Store, queue: Queue, scheduler: Scheduler, limits: &Limits) -> Self {
        Self {
            function,
            store,
            queue,
            scheduler,
            lease_ms: limits.claim_lease_seconds * 1000,
            remember_seconds: limits.dedupe_seconds,
        }
    }

    /// Schedules one check per user entry of a logged notification (`entries`: what was logged
    /// for it; only `user:` topics escalate), due `after_seconds` from now.
    pub async fn schedule(
        &self,
        tenant: &str,
        id: &str,
        entries: &[(Group, LogEntry)],
        after_seconds: u64,
    ) -> Result<usize, EscalationError> {
        let due = epoch_seconds() + after_seconds as i64;
        let checks: Vec<EscalationCheck> = entries
            .iter()
            .filter_map(|(topic, entry)| match topic {
                Group::User(user) => Some(EscalationCheck {
                    tenant: tenant.to_owned(),
                    id: id.to_owned(),
                    user: user.clone(),
                    cursor: entry.cursor.to_string(),
                    due,
                    notification: notification_of(entry),
                    push: None,
                }),
                _ => None,
            })
            .collect();
        let count = checks.len();
        let results: Vec<Result<(), EscalationError>> = futures_util::stream::iter(checks)
            .map(|check| async move { self.wait(&check).await })
            .buffer_unordered(SENDS_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        tracing::info!(%tenant, %id, users = count, after_seconds, "escalation scheduled");
        Metrics::new(self.function).count("EscalationsScheduled", count).flush();
        Ok(count)
    }

    /// Puts `check` where it comes back when due (a push held by quiet hours waits this way too).
    pub async fn wait(&self, check: &EscalationCheck) -> Result<(), EscalationError> {
        match timer_for(check.due - epoch_seconds()) {
            Timer::Queue { delay_seconds } => self.queue.escalation_check(check, delay_seconds).await?,
            Timer::Schedule => {
                let at = DateTime::<Utc>::from_timestamp(check.due, 0).unwrap_or_else(Utc::now);
                let input = serde_json::json!({ SCHEDULE_INPUT_KEY: check }).to_string();
                let name = schedule_name_for(&check.tenant, &check.id, &check.user);
                self.scheduler.upsert(&name, &at, input).await?;
            }
        }
        Ok(())
    }

    /// The check came back: escalate unless it is early, read, or escalated already.
    pub async fn check(&self, check: &EscalationCheck) -> Result<Fired, EscalationError> {
        // SQS may hand a delayed message out early only by a redrive; put it back until due.
        if check.due > epoch_seconds() {
            self.wait(check).await?;
            return Ok(Fired::NotYet);
        }
        // Recalled by its producer (#33): nothing to escalate.
        if self
            .store
            .inbox
            .revisable(&check.tenant, &check.id)
            .await?
            .is_some_and(|r| r.recalled)
        {
            tracing::info!(tenant = %check.tenant, id = %check.id, user = %check.user, "recalled: not escalated");
            Metrics::new(self.function).count("EscalationsRecalled", 1).flush();
            return Ok(Fired::Recalled);
        }
        // The user's preferences: the category off for escalation, or quiet hours (wait).
        let content = content_of(&check.notification);
        match preferences::gate(&self.store, &check.tenant, &check.user, Channel::Escalation, &content).await? {
            Gate::Send => {}
            Gate::Off => {
                Metrics::new(self.function).count("EscalationsMuted", 1).flush();
                return Ok(Fired::Muted);
            }
            Gate::Later(until) => {
                let mut later = check.clone();
                later.due = until.timestamp().max(epoch_seconds() + 1);
                self.wait(&later).await?;
                Metrics::new(self.function).count("EscalationsQuiet", 1).flush();
                return Ok(Fired::NotYet);
            }
        }
        let cursor = check.cursor.parse::<Cursor>().ok();
        if self.store.read_state.is_read(&check.tenant, &check.user, &check.id, cursor).await? {
            tracing::info!(tenant = %check.tenant, id = %check.id, user = %check.user, "read in time: not escalated");
            Metrics::new(self.function).count("EscalationsCancelled", 1).flush();
            return Ok(Fired::Read);
        }
        let key = claim_key(&check.id, &check.user);
        let remembered = epoch_seconds() + self.remember_seconds as i64;
        match self
            .store
            .idempotency
            .claim(&check.tenant, &key, Cursor::MIN, remembered, self.lease_ms)
            .await?
        {
            Claim::Done(_) => return Ok(Fired::Duplicate),
            Claim::InProgress { lease_left_ms } => return Err(EscalationError::InProgress { lease_left_ms }),
            Claim::New(_) | Claim::Unfinished(_) => {}
        }
        self.queue.escalate(message(check)).await?;
        self.store.idempotency.finish(&check.tenant, &key, None).await?;
        tracing::info!(tenant = %check.tenant, id = %check.id, user = %check.user, "escalated");
        Metrics::new(self.function).count("Escalated", 1).flush();
        Ok(Fired::Escalated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_waits_use_the_queue_and_long_ones_a_schedule() {
        assert_eq!(timer_for(60), Timer::Queue { delay_seconds: 60 });
        assert_eq!(timer_for(900), Timer::Queue { delay_seconds: 900 });
        assert_eq!(timer_for(-3), Timer::Queue { delay_seconds: 0 });
        assert_eq!(timer_for(901), Timer::Schedule);
        assert_eq!(timer_for(7 * 24 * 3600), Timer::Schedule);
    }

    #[test]
    fn the_message_has_the_contract_shape() {
        let entry = LogEntry {
            id: "n1".into(),
            cursor: Cursor::MIN,
            topic: "user:u1".into(),
            content: Content {
                event: "grade.posted".into(),
                title: Some("Grade".into()),
                ..Content::default()
            },
            created_at: "2026-11-29T07:00:00Z".into(),
        };
        let check = EscalationCheck {
            tenant: "acme".into(),
            id: "n1".into(),
            user: "u1".into(),
            cursor: Cursor::MIN.to_string(),
            due: 0,
            notification: notification_of(&entry),
            push: None,
        };
        let m: Value = serde_json::from_str(&message(&check)).unwrap();
        assert_eq!(m["id"], "n1");
        assert_eq!(m["tenant"], "acme");
        assert_eq!(m["user"], "u1");
        assert_eq!(m["notification"]["event"], "grade.posted");
        assert_eq!(m["notification"]["title"], "Grade");
        assert_eq!(m["notification"]["topic"], "user:u1");
        assert!(m["notification"].get("type").is_none());
    }

    #[test]
    fn the_guard_key_cannot_be_a_producer_id() {
        let key = claim_key("n1", "u1");
        assert!(crate::domain::notification::validate_message_id(&key).is_err());
    }
}
