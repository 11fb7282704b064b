//! `/groups/{group}/presence`: who is online in a group, paged.

use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde_json::json;

use super::{Api, ApiError, ApiResult, page_limit};
use crate::domain::auth::Principal;
use crate::domain::groups::Group;
use crate::services::membership::{PRESENCE_PAGE, PresenceToken, presence_of};

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
        let page = presence_of(&self.store, &self.roles, p, &group, shards, from, limit).await?;
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
