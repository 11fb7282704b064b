//! `/push`: the VAPID key and the caller's Web Push subscriptions.

use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::json;

use super::{Api, ApiError, ApiResult, MAX_PUSH_SUBSCRIPTIONS, body_text};
use crate::domain::auth::Principal;
use crate::io::push::{SUBSCRIPTION_DAYS, endpoint_key, parse_endpoint, parse_subscription};
use crate::io::store::epoch_seconds;

impl Api {
    pub(super) fn push_enabled(&self) -> Result<(), ApiError> {
        match self.vapid_public_key {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("Web Push is not configured")),
        }
    }

    pub(super) fn vapid_public_key(&self) -> ApiResult {
        self.push_enabled()?;
        Ok((StatusCode::OK, Some(json!({"publicKey": self.vapid_public_key}))))
    }

    /// Stores the caller's browser subscription (one per endpoint; sending it again refreshes
    /// its expiry). Validated whole before anything is written: a 400 stores nothing.
    pub(super) async fn push_subscribe(&self, p: &Principal, req: &Request) -> ApiResult {
        self.push_enabled()?;
        let sub = parse_subscription(body_text(req)?, &self.push_endpoints).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let existing = self.store.push_subscriptions.list(&p.tenant, &p.user).await?;
        let key = endpoint_key(&sub.endpoint);
        if existing.len() >= MAX_PUSH_SUBSCRIPTIONS && !existing.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_PUSH_SUBSCRIPTIONS} push subscriptions per user; delete one first"
            )));
        }
        let mut expires = epoch_seconds() + SUBSCRIPTION_DAYS * 24 * 3600;
        if let Some(ms) = sub.expires_ms {
            expires = expires.min(ms / 1000);
        }
        if expires <= epoch_seconds() {
            return Err(ApiError::bad_request("expirationTime has passed"));
        }
        self.store.push_subscriptions.put(&p.tenant, &p.user, &sub, expires).await?;
        Ok((StatusCode::CREATED, None))
    }

    /// Forgets one of the caller's subscriptions, by endpoint (absent is fine: 204 too).
    pub(super) async fn push_unsubscribe(&self, p: &Principal, req: &Request) -> ApiResult {
        self.push_enabled()?;
        let endpoint = parse_endpoint(body_text(req)?, &self.push_endpoints).map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.store.push_subscriptions.remove(&p.tenant, &p.user, &endpoint).await?;
        Ok((StatusCode::NO_CONTENT, None))
    }
}
