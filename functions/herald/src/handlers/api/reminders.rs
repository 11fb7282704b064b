//! `/reminders`: a caller's deferred notifications, created, read and cancelled (the rules are
//! `services::reminders`).

use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::json;

use super::{Api, ApiResult, body_text};
use crate::domain::auth::Principal;
use crate::services::reminders::Reminders;

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
        let notification = Reminders::shown(&r, id);
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
