//! Reminders: those set through the HTTP API (who may set one for whom and with what, where its
//! id lives, the cap on a user's pending reminders, who may see or cancel one: [`Reminders`]),
//! and firing one when its schedule comes due ([`Firing`]). The timer itself is
//! `schedule::Deferral`'s.

use chrono::Utc;
use serde_json::Value;

use crate::domain::auth::Principal;
use crate::domain::config::Limits;
use crate::domain::cursor::Cursor;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{
    NotificationRequest, ParseLimits, ProducerMessage, RESERVED_ID, Target, USER_SCOPE, format_time, is_reserved, parse_producer_message,
    user_scoped_id, validate_message_id,
};
use crate::domain::policy::ReminderPolicy;
use crate::io::queue::{EscalationCheck, Queue, QueueError};
use crate::io::store::{Reminder, ReminderState, Store, StoreError, epoch_seconds};
use crate::services::escalation::SCHEDULE_INPUT_KEY;
use crate::services::schedule::{DeferError, Deferral, Deferred};

/// A reminder refused, or a failure below. Each refusal carries the message the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error("no such reminder")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Defer(#[from] DeferError),
}

/// A reminder scheduled: the id the caller named (or was given) and when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: String,
    pub deliver_at: String,
}

#[derive(Clone)]
pub struct Reminders {
    store: Store,
    deferral: Deferral,
    policy: ReminderPolicy,
}

impl Reminders {
    pub fn new(store: Store, deferral: Deferral, policy: ReminderPolicy) -> Self {
        Self { store, deferral, policy }
    }

    /// Schedules `n` (a parsed notification of the caller's tenant) as the caller's reminder.
    pub async fn create(&self, p: &Principal, mut n: NotificationRequest) -> Result<Created, ReminderError> {
        let privileged = p.is_privileged();
        if !privileged && n.to != Target::User(p.user.clone()) {
            return Err(ReminderError::Forbidden(
                "reminders for others need the service or admin role".into(),
            ));
        }
        if !self.policy.may_escalate(p) {
            let roles = self.policy.escalate_roles();
            if n.escalate_after.is_some() {
                return Err(ReminderError::Forbidden(format!(
                    "escalate: a reminder that escalates needs one of the roles {roles}"
                )));
            }
            // `critical` overrides the user's preferences and quiet hours: not a plain user's call.
            if n.content.critical {
                return Err(ReminderError::Forbidden(format!("critical: needs one of the roles {roles}")));
            }
            if n.push.as_ref().is_some_and(|r| r.always) {
                return Err(ReminderError::Forbidden(format!(
                    "push: \"always\" in a reminder needs one of the roles {roles}; true pushes when not connected"
                )));
            }
        }
        let at = n
            .deliver_at
            .ok_or_else(|| ReminderError::BadRequest("deliverAt: is required".into()))?;
        if at <= Utc::now() {
            return Err(ReminderError::BadRequest("deliverAt: must be in the future".into()));
        }
        let id = n.id.get_or_insert_with(|| format!("r-{}", Cursor::now())).clone();
        if is_reserved(&id) {
            return Err(ReminderError::BadRequest(RESERVED_ID.into()));
        }
        // A user's own reminder lives in the user's id namespace; a privileged caller acts as a
        // producer and uses the tenant's.
        let key = if privileged { id.clone() } else { user_scoped_id(&p.user, &id) };
        n.id = Some(key.clone());
        if let Some(existing) = self.store.reminders.get(&p.tenant, &key).await? {
            if existing.state != ReminderState::Scheduled {
                return Err(ReminderError::Conflict(format!(
                    "reminder {id} is already {}",
                    existing.state.as_str()
                )));
            }
            // Rescheduling is the owner's (or a service's); nobody takes over another's reminder.
            if !privileged && existing.owner.as_deref() != Some(p.user.as_str()) {
                return Err(ReminderError::Conflict(format!("reminder id {id} is taken")));
            }
        }
        // A reminder's id is its notification's (dispatch deduplicates on it): an id already
        // delivered would be silently dropped when the reminder fires.
        if self.store.idempotency.exists(&p.tenant, &key).await? {
            return Err(ReminderError::Conflict(format!("id {id} was already used by a notification")));
        }
        // A plain user's pending reminders are capped: each is a timer (and, past 15 minutes, a
        // schedule) kept for them. Rescheduling one already pending is not another. Checked
        // before writing, so concurrent requests can pass the cap by at most the HTTP burst.
        let max = self.policy.max_pending;
        if !privileged {
            let pending = self.store.reminders.pending_of(&p.tenant, &p.user).await?;
            if pending.len() >= max && !pending.contains(&key) {
                return Err(ReminderError::TooMany(format!(
                    "at most {max} pending reminders per user; cancel one or wait until one fires"
                )));
            }
        }
        if self.deferral.defer(&n, Some(p.user.clone())).await? == Deferred::Cancelled {
            return Err(ReminderError::Conflict(format!("reminder {id} was cancelled")));
        }
        if !privileged {
            self.store.reminders.track_pending(&p.tenant, &p.user, &key, at.timestamp()).await?;
        }
        Ok(Created {
            id,
            deliver_at: format_time(&at),
        })
    }

    /// The reminder the caller knows as `id`, if it is theirs to see. Someone else's is reported
    /// as missing, not forbidden: ids are not disclosed.
    pub async fn visible(&self, p: &Principal, id: &str) -> Result<Reminder, ReminderError> {
        if validate_message_id(id).is_err() {
            return Err(ReminderError::NotFound);
        }
        let privileged = p.is_privileged();
        let key = if privileged { id.to_owned() } else { user_scoped_id(&p.user, id) };
        let r = self.store.reminders.get(&p.tenant, &key).await?.ok_or(ReminderError::NotFound)?;
        if !privileged && r.owner.as_deref() != Some(p.user.as_str()) {
            return Err(ReminderError::NotFound);
        }
        Ok(r)
    }

    /// The notification reminder `r` fires, as the caller who knows it as `id` sees it: a user's
    /// own reminder is stored under `~{sub}~{id}`, and the user sees the id they chose, as in
    /// every other answer about it.
    pub fn shown(r: &Reminder, id: &str) -> Value {
        let mut notification: Value = serde_json::from_str(&r.request).unwrap_or(Value::Null);
        if let Some(stored) = notification.get_mut("id")
            && stored.as_str().is_some_and(|s| s.starts_with(USER_SCOPE))
        {
            *stored = Value::String(id.to_owned());
        }
        notification
    }

    /// Cancels the caller's reminder `id`, unless it already fired.
    pub async fn cancel(&self, p: &Principal, id: &str) -> Result<(), ReminderError> {
        let r = self.visible(p, id).await?;
        if r.state == ReminderState::Fired {
            return Err(ReminderError::Conflict("reminder already fired".into()));
        }
        self.deferral.cancel(&p.tenant, &r.id).await?;
        if let Some(owner) = &r.owner {
            self.store.reminders.untrack_pending(&p.tenant, owner, &r.id).await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    Sent,
    Skipped(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error("schedule input is not a notification with an id: {0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Fires what a schedule brings: a reminder's notification, or an escalation check.
#[derive(Clone, Debug)]
pub struct Firing {
    store: Store,
    queue: Queue,
    limits: Limits,
}

impl Firing {
    pub fn new(store: Store, queue: Queue, limits: Limits) -> Self {
        Self { store, queue, limits }
    }

    /// Fires a schedule's input. A reminder already fired or cancelled is skipped; otherwise
    /// its notification goes to dispatch first and is marked fired second, so a crash in
    /// between fires twice, which dispatch deduplicates by id.
    pub async fn fire(&self, input: &Value) -> Result<Fired, FireError> {
        if let Some(check) = input.get(SCHEDULE_INPUT_KEY) {
            let check: EscalationCheck =
                serde_json::from_value(check.clone()).map_err(|e| FireError::BadInput(format!("escalation check: {e}")))?;
            self.queue.escalation_check(&check, 0).await?;
            tracing::info!(tenant = %check.tenant, id = %check.id, user = %check.user, "escalation check due");
            return Ok(Fired::Sent);
        }
        let body = input.to_string();
        let limits = ParseLimits::from(&self.limits);
        let req = match parse_producer_message(&body, limits) {
            Ok(ProducerMessage::Notify(r)) if r.id.is_some() => r,
            Ok(_) => return Err(FireError::BadInput("not a notification with an id".into())),
            Err(e) => return Err(FireError::BadInput(e.to_string())),
        };
        let id = req.id.as_deref().unwrap_or_default();
        if let Some(r) = self.store.reminders.get(&req.tenant, id).await? {
            match r.state {
                ReminderState::Cancelled => return Ok(self.skipped("cancelled")),
                ReminderState::Fired => return Ok(self.skipped("already fired")),
                ReminderState::Scheduled => {}
            }
        }
        // Send first, then mark: a crash in between means a second fire, which dispatch
        // deduplicates; the other order could lose the reminder.
        self.queue.dispatch(body, 0).await?;
        let expires = epoch_seconds() + self.limits.retention_seconds as i64;
        self.store.reminders.mark_fired(&req.tenant, id, expires).await?;
        Metrics::new("reminder").count("Fired", 1).flush();
        tracing::info!(tenant = %req.tenant, id, "reminder fired");
        Ok(Fired::Sent)
    }

    fn skipped(&self, why: &'static str) -> Fired {
        Metrics::new("reminder").count("Skipped", 1).flush();
        tracing::info!(why, "reminder skipped");
        Fired::Skipped(why)
    }
}
