//! `/push`: the VAPID key and the caller's Web Push subscriptions (the rules are
//! `services::web_push::Subscriptions`).

use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::json;

use super::{Api, ApiError, ApiResult, body_text};
use crate::domain::auth::Principal;

impl Api {
    fn push_enabled(&self) -> Result<(), ApiError> {
        match self.vapid_public_key {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("Web Push is not configured")),
        }
    }

    pub(super) fn vapid_public_key(&self) -> ApiResult {
        self.push_enabled()?;
        Ok((StatusCode::OK, Some(json!({"publicKey": self.vapid_public_key}))))
    }

    pub(super) async fn push_subscribe(&self, p: &Principal, req: &Request) -> ApiResult {
        self.push_enabled()?;
        self.push_subscriptions.subscribe(&p.tenant, &p.user, body_text(req)?).await?;
        Ok((StatusCode::CREATED, None))
    }

    pub(super) async fn push_unsubscribe(&self, p: &Principal, req: &Request) -> ApiResult {
        self.push_enabled()?;
        self.push_subscriptions.unsubscribe(&p.tenant, &p.user, body_text(req)?).await?;
        Ok((StatusCode::NO_CONTENT, None))
    }
}
