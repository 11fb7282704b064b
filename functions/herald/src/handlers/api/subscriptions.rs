//! `/subscriptions/{user}/{group}`: durable subscriptions, set by a service or an admin.

use lambda_http::http::StatusCode;

use super::{Api, ApiError, ApiResult};
use crate::domain::auth::Principal;
use crate::domain::groups::{Group, valid_id};

impl Api {
    pub(super) async fn subscription(&self, p: &Principal, user: &str, group: &str, subscribe: bool) -> ApiResult {
        if !p.is_privileged() {
            return Err(ApiError::forbidden("subscriptions need the service or admin role"));
        }
        if !valid_id(user, 128) {
            return Err(ApiError::bad_request("user id must match [A-Za-z0-9._-]{1,128}"));
        }
        let group = Group::parse(group).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !matches!(group, Group::Named { .. }) {
            return Err(ApiError::bad_request("only named groups (kind:id) take subscriptions"));
        }
        if subscribe {
            self.store.subscriptions.subscribe(&p.tenant, user, &group).await?;
        } else {
            self.unsubscriber.unsubscribe(&p.tenant, user, &group).await?;
        }
        Ok((StatusCode::NO_CONTENT, None))
    }
}
