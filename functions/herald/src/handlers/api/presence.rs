//! `/groups/{group}/presence`: who is online in a group, paged.

use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde_json::json;

use super::{Api, ApiError, ApiResult, PRESENCE_PAGE, page_limit};
use crate::domain::auth::Principal;
use crate::domain::groups::Group;
use crate::services::membership::{PresenceToken, entitled, presence_page};

impl Api {
    /// Paged: a big tenant's presence would not fit one response (API Gateway and Lambda cap
    /// them at 6 MB), and reading it whole would be one long scan of every shard.
    pub(super) async fn presence(&self, p: &Principal, group: &str, req: &Request) -> ApiResult {
        let group = Group::parse(group).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let q = req.query_string_parameters();
        let limit = page_limit(q.first("limit"), PRESENCE_PAGE, PRESENCE_PAGE)?;
        let shards = group.shards(self.limits.membership_shards);
        let from = match q.first("after").filter(|a| !a.is_empty()) {
            None => PresenceToken { shard: 0, after: None },
            Some(t) => {
                PresenceToken::decode(t, shards).ok_or_else(|| ApiError::bad_request("after is not a token from a previous page"))?
            }
        };
        // Every user is a member of `tenant`: its presence is the whole tenant's online users,
        // which is an operator's view, not a member's.
        if group == Group::Tenant && !p.is_privileged() {
            return Err(ApiError::forbidden("the tenant's presence needs the service or admin role"));
        }
        if !entitled(&self.store, &self.roles, p, &group).await? {
            return Err(ApiError::forbidden(format!("not a member of {group}")));
        }
        let page = presence_page(&self.store, &group.key(&p.tenant), shards, from, limit).await?;
        Ok((
            StatusCode::OK,
            Some(json!({
                "group": group.to_string(),
                "users": page.users,
                "connections": page.connections,
                "next": page.next.map(|t| t.encode()),
            })),
        ))
    }
}
