//! `/notifications`: `missed`, `read`, `unread-count`, and `POST` (to the dispatch queue).

use std::collections::HashMap;

use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde_json::{Value, json};

use super::{Api, ApiError, ApiResult, DEFAULT_PAGE, MAX_PAGE, UNREAD_CAP, body_text, json_body, page_limit};
use crate::domain::auth::{Principal, Role};
use crate::domain::cursor::{Cursor, now_millis};
use crate::domain::inbox::MarkRead;
use crate::domain::notification::{
    ParseLimits, ProducerMessage, RESERVED_ID, RejectCode, Revision, Target, is_reserved, parse_producer_message,
};
use crate::io::store::NotRevised;
use crate::services::inbox::{ReadMarks, unrevisable};
use crate::services::membership::readable_topics;
use crate::services::replay::{ReadRequest, Reader, Start};

impl Api {
    pub(super) async fn missed(&self, p: &Principal, req: &Request) -> ApiResult {
        let q = req.query_string_parameters();
        let start = Start::parse(q.first("since"), q.first("page")).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let limit = page_limit(q.first("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let topics = readable_topics(&self.store, p).await?;
        // A poller keeps `cursor` for its next poll (any cursor it received works too); `next`
        // pages on from exactly what was read. What its cursor shows it has is read past.
        let read = self
            .replay
            .read(ReadRequest {
                tenant: &p.tenant,
                user: &p.user,
                topics: &topics,
                start,
                reader: Reader::Poller(0),
                limit,
                have: &[],
                visible_since: HashMap::new(),
                connection: "",
            })
            .await?;
        let items: Vec<Value> = read
            .entries
            .iter()
            .map(|e| serde_json::from_str(&read.frame(e, false)).unwrap_or(Value::Null))
            .collect();
        let a = read.answer;
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
        let topics = readable_topics(&self.store, p).await?;
        let unread = self.replay.unread(&p.tenant, &p.user, &topics, UNREAD_CAP).await?;
        Ok((StatusCode::OK, Some(json!({"count": unread.count, "capped": unread.capped}))))
    }

    pub(super) fn parse_notification(
        &self,
        p: &Principal,
        req: &Request,
    ) -> Result<crate::domain::notification::NotificationRequest, ApiError> {
        match self.parse_producer(p, req)? {
            ProducerMessage::Notify(n) => Ok(n),
            ProducerMessage::Revise(_) => Err(ApiError::bad_request("updates and recalls go to POST /notifications")),
            ProducerMessage::Control(_) => Err(ApiError::bad_request("control messages go to /subscriptions and /reminders")),
        }
    }

    /// The body as a producer message; a notification's tenant and target checked against the
    /// caller.
    fn parse_producer(&self, p: &Principal, req: &Request) -> Result<ProducerMessage, ApiError> {
        let raw = body_text(req)?;
        let limits = ParseLimits::from(&self.limits);
        let parsed = parse_producer_message(raw, limits).map_err(|r| match r.code {
            RejectCode::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", r.to_string()),
            RejectCode::BadRequest => ApiError::bad_request(r.to_string()),
            RejectCode::NotFound => ApiError::not_found(r.to_string()),
        })?;
        if let ProducerMessage::Notify(n) = &parsed {
            if n.tenant != p.tenant {
                return Err(ApiError::forbidden("tenant does not match the token"));
            }
            if n.to == Target::All && !p.has(Role::Platform) {
                return Err(ApiError::forbidden("platform-wide notifications need the platform role"));
            }
        }
        Ok(parsed)
    }

    pub(super) async fn publish(&self, p: &Principal, req: &Request) -> ApiResult {
        if !p.has(Role::Service) {
            return Err(ApiError::forbidden("publishing needs the service role"));
        }
        let mut n = match self.parse_producer(p, req)? {
            ProducerMessage::Notify(n) => n,
            ProducerMessage::Revise(r) => return self.revise(p, r).await,
            ProducerMessage::Control(_) => {
                return Err(ApiError::bad_request("control messages go to /subscriptions and /reminders"));
            }
        };
        // `critical` passes users' preferences and quiet hours: only the roles that may put
        // work on the escalation worker (`HERALD_REMINDER_ESCALATE_ROLES`) may set it.
        if n.content.critical && !self.critical.may_escalate(p) {
            return Err(ApiError::forbidden(format!(
                "critical: needs one of the roles {}",
                self.critical.escalate_roles()
            )));
        }
        let id = n.id.get_or_insert_with(|| format!("n-{}", Cursor::now())).clone();
        reserved(&id)?;
        self.queue.dispatch(n.to_json().to_string(), 0).await?;
        Ok((StatusCode::ACCEPTED, Some(json!({"id": id}))))
    }
}

impl Api {
    /// `POST /notifications` with `{"update":ID,...}` / `{"recall":ID}`: checked here (the
    /// caller's tenant, an id of that tenant that can still change), applied by dispatch.
    async fn revise(&self, p: &Principal, r: Revision) -> ApiResult {
        if r.tenant != p.tenant {
            return Err(ApiError::forbidden("tenant does not match the token"));
        }
        match unrevisable(&self.store, &r.tenant, &r.id).await? {
            Some(NotRevised::Recalled) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{} was recalled: nothing changes it", r.id),
            )),
            Some(_) => Err(ApiError::not_found(format!("no notification {} in this tenant", r.id))),
            None => {
                let body = r.to_json().to_string();
                self.queue.dispatch(body, 0).await?;
                Ok((StatusCode::ACCEPTED, Some(json!({"id": r.id}))))
            }
        }
    }
}

/// Ids starting with `~` belong to users' own reminders; nobody names one.
fn reserved(id: &str) -> Result<(), ApiError> {
    if is_reserved(id) {
        return Err(ApiError::bad_request(RESERVED_ID));
    }
    Ok(())
}
