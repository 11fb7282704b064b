//! `/reminders`: a caller's deferred notifications, created, read and cancelled (the rules are
//! `services::reminders`).

use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

use super::{Api, ApiResult, body_text};
use crate::domain::auth::Principal;

impl Api {
    pub(super) async fn create_reminder(&self, p: &Principal, req: &Request) -> ApiResult {
        let n = self.submissions.notification(p, body_text(req)?)?;
        let created = self.reminders.create(p, n).await?;
        Ok((
            StatusCode::CREATED,
            Some(json!({"id": created.id, "state": "scheduled", "deliverAt": created.deliver_at})),
        ))
    }

    pub(super) async fn get_reminder(&self, p: &Principal, id: &str) -> ApiResult {
        let r = self.reminders.visible(p, id).await?;
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
        self.reminders.cancel(p, id).await?;
        Ok((StatusCode::NO_CONTENT, None))
    }
}
