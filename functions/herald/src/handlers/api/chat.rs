//! Chat over HTTP: `/groups/{group}/history`, `/groups/{group}/read`, `/groups/{group}/receipts`
//! and `/uploads` (the protocols are `services::chat`'s).

use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde_json::{Value, json};

use super::{Api, ApiError, ApiResult, json_body, page_limit, received_at};
use crate::domain::auth::Principal;
use crate::domain::chat::{HISTORY_DEFAULT, HISTORY_MAX};
use crate::domain::cursor::Cursor;
use crate::io::objects::Presigned;
use crate::services::chat::{DOWNLOAD_URL_TTL, ReceiptList, UPLOAD_URL_TTL};

impl Api {
    pub(super) async fn history(&self, p: &Principal, group: &str, req: &Request) -> ApiResult {
        let q = req.query_string_parameters();
        let limit = page_limit(q.first("limit"), HISTORY_DEFAULT, HISTORY_MAX)?;
        let page = self.history.page(p, group, q.first("before"), limit).await?;
        Ok((
            StatusCode::OK,
            Some(json!({"group": page.group, "items": page.items, "next": page.next})),
        ))
    }

    pub(super) async fn mark_read(&self, p: &Principal, group: &str, req: &Request) -> ApiResult {
        let body = json_body(req)?;
        let up_to = body
            .get("upTo")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("upTo must be a cursor string"))?;
        let marked = self.receipts.mark(p, group, up_to, received_at(req)).await?;
        Ok((
            StatusCode::OK,
            Some(json!({"group": marked.group, "upTo": marked.up_to.to_string(), "advanced": marked.advanced})),
        ))
    }

    /// Each member's last-read cursor; above the member cap, counts (see docs/DESIGN.md). With
    /// `?upTo=CURSOR`, also how many members have read at least that far (`seen`).
    pub(super) async fn receipts(&self, p: &Principal, group: &str, req: &Request) -> ApiResult {
        let q = req.query_string_parameters();
        let at: Option<Cursor> = match q.first("upTo") {
            None => None,
            Some(c) => Some(c.parse().map_err(|_| ApiError::bad_request("upTo is not a valid cursor"))?),
        };
        let (group, list) = self.receipts.list(p, group).await?;
        let seen = at.map(|c| list.seen(c));
        let body = match list {
            ReceiptList::Members(all) => json!({
                "group": group,
                "mode": "members",
                "receipts": all.iter().map(|r| json!({"user": r.user, "upTo": r.up_to.to_string()})).collect::<Vec<_>>(),
                "readers": all.len(),
                "seen": seen,
            }),
            ReceiptList::Counts { readers, capped, .. } => json!({
                "group": group,
                "mode": "counts",
                "readers": readers,
                "capped": capped,
                "seen": seen,
            }),
        };
        Ok((StatusCode::OK, Some(body)))
    }

    pub(super) async fn upload(&self, p: &Principal, req: &Request) -> ApiResult {
        let body = json_body(req)?;
        let upload = self.sharing.upload(p, &body).await?;
        Ok((
            StatusCode::CREATED,
            Some(json!({
                "key": upload.key,
                "upload": presigned(&upload.put, UPLOAD_URL_TTL.as_secs()),
            })),
        ))
    }

    pub(super) async fn download(&self, p: &Principal, key: &str) -> ApiResult {
        let d = self.sharing.download(p, key).await?;
        Ok((
            StatusCode::OK,
            Some(json!({
                "key": d.file.key,
                "group": d.file.group,
                "name": d.file.name,
                "contentType": d.file.content_type,
                "size": d.file.size,
                "from": {"user": d.file.user},
                "download": presigned(&d.get, DOWNLOAD_URL_TTL.as_secs()),
            })),
        ))
    }
}

/// `{"url","method","headers","expiresIn"}`. `content-length` is left out of the headers: a
/// browser sets it from the body itself (and may not set it by hand); it is signed all the same.
fn presigned(p: &Presigned, expires_in: u64) -> Value {
    let headers: serde_json::Map<String, Value> = p
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({"url": p.url, "method": p.method, "headers": headers, "expiresIn": expires_in})
}
