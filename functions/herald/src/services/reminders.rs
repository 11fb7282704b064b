//! Reminders set through the HTTP API: who may set one for whom and with what, where its id
//! lives, the cap on a user's pending reminders, and who may see or cancel one. The timer itself
//! is `schedule::Deferral`'s.

use chrono::Utc;

use crate::domain::auth::Principal;
use crate::domain::cursor::Cursor;
use crate::domain::notification::{
    NotificationRequest, RESERVED_ID, Target, format_time, is_reserved, user_scoped_id, validate_message_id,
};
use crate::domain::policy::ReminderPolicy;
use crate::io::store::{Reminder, ReminderState, Store, StoreError};
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
