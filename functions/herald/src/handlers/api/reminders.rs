//! `/reminders`: a caller's deferred notifications, created, read and cancelled.

use chrono::Utc;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

use super::notifications::reserved;
use super::{Api, ApiError, ApiResult};
use crate::domain::auth::Principal;
use crate::domain::cursor::Cursor;
use crate::domain::notification::{Target, user_scoped_id};
use crate::io::store::ReminderState;
use crate::services::schedule::Deferred;

impl Api {
    pub(super) async fn create_reminder(&self, p: &Principal, req: &Request) -> ApiResult {
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

    pub(super) async fn visible_reminder(&self, p: &Principal, id: &str) -> Result<crate::io::store::Reminder, ApiError> {
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

    pub(super) async fn get_reminder(&self, p: &Principal, id: &str) -> ApiResult {
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

    pub(super) async fn cancel_reminder(&self, p: &Principal, id: &str) -> ApiResult {
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
}
