//! What a producer sends over HTTP (`POST /notifications`, and the notification of `POST
//! /reminders`): parsed as dispatch parses its queue's messages, then held to the caller (its own
//! tenant, the platform role for `all`, the roles that may set `critical`, no reserved id, an
//! update or recall only of a notification that can still change) and queued for dispatch
//! re-serialized. The HTTP API never forwards a caller's body unchecked.

use crate::domain::auth::{Principal, Role};
use crate::domain::config::Limits;
use crate::domain::cursor::Cursor;
use crate::domain::notification::{
    NotificationRequest, ParseLimits, ProducerMessage, RESERVED_ID, RejectCode, Rejection, Revision, Target, is_reserved,
    parse_producer_message,
};
use crate::domain::policy::ReminderPolicy;
use crate::io::queue::{Queue, QueueError};
use crate::io::store::{NotRevised, Store, StoreError};
use crate::services::inbox::unrevisable;

/// A message refused, each refusal with the message the caller sees; or a failure below.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<Rejection> for SubmitError {
    fn from(r: Rejection) -> Self {
        match r.code {
            RejectCode::TooLarge => Self::TooLarge(r.to_string()),
            RejectCode::BadRequest => Self::BadRequest(r.to_string()),
            RejectCode::NotFound => Self::NotFound(r.to_string()),
        }
    }
}

const CONTROL_ELSEWHERE: &str = "control messages go to /subscriptions and /reminders";

#[derive(Clone, Debug)]
pub struct Submissions {
    store: Store,
    queue: Queue,
    limits: ParseLimits,
    /// Who may mark a notification `critical`: the roles that may put work on the escalation
    /// worker (`HERALD_REMINDER_ESCALATE_ROLES`).
    critical: ReminderPolicy,
}

impl Submissions {
    pub fn new(store: Store, queue: Queue, limits: &Limits, critical: ReminderPolicy) -> Self {
        Self {
            store,
            queue,
            limits: ParseLimits::from(limits),
            critical,
        }
    }

    /// The notification a reminder is made of: updates, recalls and control messages are not.
    pub fn notification(&self, p: &Principal, body: &str) -> Result<NotificationRequest, SubmitError> {
        match self.parse(p, body)? {
            ProducerMessage::Notify(n) => Ok(n),
            ProducerMessage::Revise(_) => Err(SubmitError::BadRequest("updates and recalls go to POST /notifications".into())),
            ProducerMessage::Control(_) => Err(SubmitError::BadRequest(CONTROL_ELSEWHERE.into())),
        }
    }

    /// A notification, update or recall of a caller with the service role (which the route
    /// checks before reading the body), queued for dispatch. Answers the notification's id.
    pub async fn submit(&self, p: &Principal, body: &str) -> Result<String, SubmitError> {
        let mut n = match self.parse(p, body)? {
            ProducerMessage::Notify(n) => n,
            ProducerMessage::Revise(r) => return self.revise(p, r).await,
            ProducerMessage::Control(_) => return Err(SubmitError::BadRequest(CONTROL_ELSEWHERE.into())),
        };
        // `critical` passes users' preferences and quiet hours.
        if n.content.critical && !self.critical.may_escalate(p) {
            return Err(SubmitError::Forbidden(format!(
                "critical: needs one of the roles {}",
                self.critical.escalate_roles()
            )));
        }
        let id = n.id.get_or_insert_with(|| format!("n-{}", Cursor::now())).clone();
        // Ids starting with `~` belong to users' own reminders; nobody names one.
        if is_reserved(&id) {
            return Err(SubmitError::BadRequest(RESERVED_ID.into()));
        }
        self.queue.dispatch(n.to_json().to_string(), 0).await?;
        Ok(id)
    }

    /// The body as a producer message; a notification's tenant and target checked against the
    /// caller.
    fn parse(&self, p: &Principal, body: &str) -> Result<ProducerMessage, SubmitError> {
        let parsed = parse_producer_message(body, self.limits)?;
        if let ProducerMessage::Notify(n) = &parsed {
            if n.tenant != p.tenant {
                return Err(SubmitError::Forbidden("tenant does not match the token".into()));
            }
            if n.to == Target::All && !p.has(Role::Platform) {
                return Err(SubmitError::Forbidden("platform-wide notifications need the platform role".into()));
            }
        }
        Ok(parsed)
    }

    /// `{"update":ID,...}` / `{"recall":ID}`: checked here (the caller's tenant, an id of that
    /// tenant that can still change), applied by dispatch.
    async fn revise(&self, p: &Principal, r: Revision) -> Result<String, SubmitError> {
        if r.tenant != p.tenant {
            return Err(SubmitError::Forbidden("tenant does not match the token".into()));
        }
        match unrevisable(&self.store, &r.tenant, &r.id).await? {
            Some(NotRevised::Recalled) => Err(SubmitError::Conflict(format!("{} was recalled: nothing changes it", r.id))),
            Some(_) => Err(SubmitError::NotFound(format!("no notification {} in this tenant", r.id))),
            None => {
                self.queue.dispatch(r.to_json().to_string(), 0).await?;
                Ok(r.id)
            }
        }
    }
}
