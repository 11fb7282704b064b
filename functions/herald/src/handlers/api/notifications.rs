//! `/notifications`: `missed`, `read`, `unread-count`, and `POST` (to the dispatch queue).

use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde_json::json;

use super::{Api, ApiError, ApiResult, body_text, json_body, page_limit};
use crate::domain::auth::{Principal, Role};
use crate::domain::cursor::now_millis;
use crate::domain::inbox::MarkRead;
use crate::services::inbox::{MISSED_PAGE, MISSED_PAGE_MAX, Missed, ReadMarks};
use crate::services::replay::Start;

impl Api {
    pub(super) async fn missed(&self, p: &Principal, req: &Request) -> ApiResult {
        let q = req.query_string_parameters();
        let start = Start::parse(q.first("since"), q.first("page")).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let limit = page_limit(q.first("limit"), MISSED_PAGE, MISSED_PAGE_MAX)?;
        let Missed { items, answer: a } = self.inbox.missed(p, start, limit).await?;
        Ok((
            StatusCode::OK,
            Some(json!({"items": items, "next": a.next, "cursor": a.cursor.to_string(), "gap": a.gap})),
        ))
    }

    pub(super) async fn read(&self, p: &Principal, req: &Request) -> ApiResult {
        let read = MarkRead::parse(&json_body(req)?, now_millis()).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let count = read.ids.as_ref().map_or(0, Vec::len);
        // The user's devices learn of it with the new count (`inbox::ReadSync`); so does the caller.
        let done = self.read_sync.read(p, ReadMarks::from(&read), None).await?;
        Ok((
            StatusCode::OK,
            Some(json!({"count": count, "unread": done.unread, "capped": done.capped, "seq": done.seq})),
        ))
    }

    pub(super) async fn unread_count(&self, p: &Principal) -> ApiResult {
        let unread = self.inbox.unread(p).await?;
        Ok((StatusCode::OK, Some(json!({"count": unread.count, "capped": unread.capped}))))
    }

    pub(super) async fn publish(&self, p: &Principal, req: &Request) -> ApiResult {
        if !p.has(Role::Service) {
            return Err(ApiError::forbidden("publishing needs the service role"));
        }
        let id = self.submissions.submit(p, body_text(req)?).await?;
        Ok((StatusCode::ACCEPTED, Some(json!({"id": id}))))
    }
}
