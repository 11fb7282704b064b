//! `/preferences` (issue #33): a user's own notification preferences, and (`/preferences/tenant`,
//! role `admin`) the tenant's defaults, which apply to users without their own.

use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::json;

use super::{Api, ApiError, ApiResult, json_body};
use crate::domain::auth::{Principal, Role};
use crate::domain::preferences::Preferences;
use crate::services::preferences::{defaults, effective, replace};

impl Api {
    pub(super) async fn get_preferences(&self, p: &Principal, tenant_defaults: bool) -> ApiResult {
        if tenant_defaults {
            admin(p)?;
            let prefs = defaults(&self.store, &p.tenant, &p.user).await?;
            return Ok((StatusCode::OK, Some(prefs.to_json())));
        }
        let (prefs, source) = effective(&self.store, &p.tenant, &p.user).await?;
        let mut body = prefs.to_json();
        body["source"] = json!(source.as_str());
        Ok((StatusCode::OK, Some(body)))
    }

    /// Replaces the document. Everything is validated first: a 400 stores nothing.
    pub(super) async fn put_preferences(&self, p: &Principal, req: &Request, tenant_defaults: bool) -> ApiResult {
        if tenant_defaults {
            admin(p)?;
        }
        let body = json_body(req)?;
        let prefs = Preferences::parse(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let user = (!tenant_defaults).then_some(p.user.as_str());
        let doc = replace(&self.store, &p.tenant, user, &prefs).await?;
        Ok((StatusCode::OK, Some(doc)))
    }
}

fn admin(p: &Principal) -> Result<(), ApiError> {
    if p.has(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::forbidden("the tenant's default preferences need the admin role"))
    }
}
