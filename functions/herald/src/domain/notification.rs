//! Notifications: what producers send (parsed with precise errors), what the log stores, and the
//! frame a client receives.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::config::{FRAME_HARD_CAP, Limits};
use crate::domain::cursor::{self, Cursor};
use crate::domain::groups::{Group, valid_id, validate_tenant};

/// Largest producer message read at all; bigger ones are rejected before parsing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Explicit recipient lists above this belong in a group.
pub const MAX_USERS: usize = 1000;
/// Scheduling horizon for `deliverAt`.
pub const MAX_DELAY_DAYS: i64 = 366;
/// The longest `escalate.afterSeconds`: 7 days. The shortest is configured
/// ([`ParseLimits::escalate_min_seconds`], 60 s unless a test stack lowers it).
pub const ESCALATE_MAX_SECONDS: u64 = 7 * 24 * 3600;

/// Who a notification is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Users(Vec<String>),
    Group(Group),
    Tenant,
    All,
}

impl Target {
    /// The log topics the notification is written under, one per audience.
    pub fn topics(&self) -> Vec<Group> {
        match self {
            Target::User(u) => vec![Group::user(u)],
            Target::Users(us) => us.iter().map(|u| Group::user(u)).collect(),
            Target::Group(g) => vec![g.clone()],
            Target::Tenant => vec![Group::Tenant],
            Target::All => vec![Group::All],
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Target::User(u) => serde_json::json!({ "user": u }),
            Target::Users(us) => serde_json::json!({ "users": us }),
            Target::Group(g) => serde_json::json!({ "group": g.to_string() }),
            Target::Tenant => serde_json::json!({ "tenant": true }),
            Target::All => serde_json::json!({ "all": true }),
        }
    }
}

/// What the user sees. Stored in the log and copied into every frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Content {
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<Value>,
    /// A latest-value stream's key: of the notifications of one topic with the same key, the log
    /// keeps, replays and delivers only the latest.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub collapse: Option<String>,
    /// Who published it, on a client publish: taken from the publisher's token, never from the
    /// frame. Producer notifications have none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<Sender>,
    /// The producer's version of a notification it updated (`{"update":ID,...}`): 2, 3, ...
    /// The first version carries none. Clients keep the highest they saw of an id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<u64>,
    /// `"critical": true`: preferences and quiet hours do not hold it back (allowed by role).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub critical: bool,
    /// A recall's tombstone: the entry replays as `{"type":"recalled","id",...}`, so a device
    /// that was away when it was recalled removes it too; never counted unread.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub recalled: bool,
}

/// `"from":{"user":"u1"}` in a client-published frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub user: String,
}

/// A validated producer notification.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRequest {
    /// The producer's idempotency key; when absent the transport supplies one (the SQS message id
    /// or an id minted by the HTTP API), so redeliveries still deduplicate.
    pub id: Option<String>,
    pub tenant: String,
    pub to: Target,
    pub content: Content,
    pub deliver_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<u64>,
    /// `"escalate":{"afterSeconds":n}`: if no device of a targeted user has read or acked it
    /// `n` seconds after it was logged, it goes to the escalation queue (see `escalation`).
    pub escalate_after: Option<u64>,
    /// `"push"`: a Web Push too, to the targeted users without a live connection (or to all).
    pub push: Option<PushRequest>,
}

/// A producer's `"push": true | "always"` with its `"urgency"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushRequest {
    /// `"always"`: push to every targeted user, connected or not.
    pub always: bool,
    pub urgency: Urgency,
}

/// RFC 8030 §5.3 `Urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    VeryLow,
    Low,
    #[default]
    Normal,
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Urgency::VeryLow, Urgency::Low, Urgency::Normal, Urgency::High]
            .into_iter()
            .find(|u| u.as_str() == s)
    }
}

impl NotificationRequest {
    /// Back to the producer wire format: what is re-queued for a delay or put into a schedule.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(id) = &self.id {
            m.insert("id".into(), id.clone().into());
        }
        m.insert("tenant".into(), self.tenant.clone().into());
        m.insert("to".into(), self.to.to_json());
        m.insert("event".into(), self.content.event.clone().into());
        for (k, v) in [
            ("title", &self.content.title),
            ("body", &self.content.body),
            ("link", &self.content.link),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if let Some(d) = &self.content.data {
            m.insert("data".into(), d.clone());
        }
        if let Some(k) = &self.content.collapse {
            m.insert("collapse".into(), k.clone().into());
        }
        if self.content.critical {
            m.insert("critical".into(), true.into());
        }
        if let Some(at) = &self.deliver_at {
            m.insert("deliverAt".into(), format_time(at).into());
        }
        if let Some(ttl) = self.ttl_seconds {
            m.insert("ttlSeconds".into(), ttl.into());
        }
        if let Some(after) = self.escalate_after {
            m.insert("escalate".into(), serde_json::json!({ "afterSeconds": after }));
        }
        if let Some(p) = &self.push {
            m.insert("push".into(), if p.always { "always".into() } else { true.into() });
            if p.urgency != Urgency::Normal {
                m.insert("urgency".into(), p.urgency.as_str().into());
            }
        }
        Value::Object(m)
    }
}

/// Control messages from services, on the same queue as notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Subscribe { tenant: String, user: String, group: Group },
    Unsubscribe { tenant: String, user: String, group: Group },
    Cancel { tenant: String, id: String },
}

// One lives per message being handled, moved once into its handler: boxing the notification
// would save a few hundred bytes of stack at the price of an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ProducerMessage {
    Notify(NotificationRequest),
    Control(Control),
    /// `{"update":ID,...}` / `{"recall":ID}` of a notification the producer sent.
    Revise(Revision),
}

/// A producer's change to a notification it sent (issue #33).
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub tenant: String,
    pub id: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The fields given replace the notification's; the others stay. `version` orders updates:
    /// one not above the stored version changes nothing (a late older update never wins).
    Update { version: u64, fields: ContentPatch },
    /// Removed from every inbox; replays and pushes no longer show it, and it does not escalate.
    Recall,
}

impl Revision {
    /// Back to the producer wire format (the HTTP API queues what it checked).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("tenant".into(), self.tenant.clone().into());
        match &self.change {
            Change::Recall => {
                m.insert("recall".into(), self.id.clone().into());
            }
            Change::Update { version, fields } => {
                m.insert("update".into(), self.id.clone().into());
                m.insert("version".into(), (*version).into());
                for (k, v) in [
                    ("event", &fields.event),
                    ("title", &fields.title),
                    ("body", &fields.body),
                    ("link", &fields.link),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v.clone().into());
                    }
                }
                if let Some(d) = &fields.data {
                    m.insert("data".into(), d.clone());
                }
            }
        }
        Value::Object(m)
    }
}

/// The content fields an update may replace (`None`: kept).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentPatch {
    pub event: Option<String>,
    pub title: Option<String>,
    pub body: Option<String>,
    pub link: Option<String>,
    pub data: Option<Value>,
}

impl ContentPatch {
    /// `content` with this patch applied, at `version`.
    pub fn apply(&self, content: &Content, version: u64) -> Content {
        let mut c = content.clone();
        if let Some(e) = &self.event {
            c.event = e.clone();
        }
        for (slot, v) in [(&mut c.title, &self.title), (&mut c.body, &self.body), (&mut c.link, &self.link)] {
            if v.is_some() {
                slot.clone_from(v);
            }
        }
        if self.data.is_some() {
            c.data.clone_from(&self.data);
        }
        c.version = Some(version);
        c
    }
}

/// The largest version an update may carry (JSON numbers stay exact up to 2^53).
pub const MAX_VERSION: u64 = 1 << 53;

const UPDATE_FIELDS: &[&str] = &["update", "tenant", "version", "event", "title", "body", "link", "data"];
const RECALL_FIELDS: &[&str] = &["recall", "tenant"];

fn parse_revision(obj: &Map<String, Value>, limits: ParseLimits) -> Result<Revision, Rejection> {
    if obj.contains_key("update") && obj.contains_key("recall") {
        return Err(bad("update", "a message either updates or recalls"));
    }
    let tenant = tenant(obj)?;
    if obj.contains_key("recall") {
        reject_unknown(obj, RECALL_FIELDS)?;
        let id = required_str(obj, "recall")?;
        validate_revised_id(&id, "recall")?;
        return Ok(Revision {
            tenant,
            id,
            change: Change::Recall,
        });
    }
    reject_unknown(obj, UPDATE_FIELDS)?;
    let id = required_str(obj, "update")?;
    validate_revised_id(&id, "update")?;
    let version = obj
        .get("version")
        .ok_or_else(|| bad("version", "is required: 2 for the first update, then higher"))?
        .as_u64()
        .filter(|v| (2..=MAX_VERSION).contains(v))
        .ok_or_else(|| {
            bad(
                "version",
                format!("must be an integer within 2..={MAX_VERSION} (the original is 1)"),
            )
        })?;
    let event = optional_str(obj, "event")?;
    if event.as_deref().is_some_and(|e| !valid_event(e)) {
        return Err(bad("event", "must match [A-Za-z0-9._:-]{1,64}"));
    }
    let title = optional_title(obj)?;
    let link = optional_link(obj)?;
    let data = optional_data(obj)?;
    let fields = ContentPatch {
        event,
        title,
        body: optional_str(obj, "body")?,
        link,
        data,
    };
    if fields == ContentPatch::default() {
        return Err(bad("update", "give at least one of event, title, body, link, data"));
    }
    // The patch alone must fit the budget; the patched frame is checked again when applied.
    let patched = fields.apply(&Content::default(), version);
    let probe = LogEntry {
        id: id.clone(),
        cursor: Cursor::MIN,
        topic: "x".repeat(64),
        content: patched,
        created_at: "2000-01-01T00:00:00Z".into(),
    };
    let size = probe.frame(true).len();
    let budget = limits.payload_budget.min(FRAME_HARD_CAP);
    if size > budget {
        return Err(Rejection {
            code: RejectCode::TooLarge,
            field: "message".into(),
            reason: format!("the updated frame is {size} bytes; the budget is {budget}"),
        });
    }
    Ok(Revision {
        tenant,
        id,
        change: Change::Update { version, fields },
    })
}

/// An id an update or recall names: a producer's id (users' own `~` ids are not producers' to change).
fn validate_revised_id(id: &str, field: &str) -> Result<(), Rejection> {
    validate_message_id(id).map_err(|e| bad(field, e.reason))?;
    if is_reserved(id) {
        return Err(bad(field, "ids starting with ~ are users' own"));
    }
    Ok(())
}

/// `title`: at most 256 characters; the same rule for a notification and its update.
fn optional_title(obj: &Map<String, Value>) -> Result<Option<String>, Rejection> {
    let title = optional_str(obj, "title")?;
    if title.as_ref().is_some_and(|t| t.chars().count() > 256) {
        return Err(bad("title", "is longer than 256 characters"));
    }
    Ok(title)
}

/// `link`: at most 2,048 bytes.
fn optional_link(obj: &Map<String, Value>) -> Result<Option<String>, Rejection> {
    let link = optional_str(obj, "link")?;
    if link.as_ref().is_some_and(|l| l.len() > 2048) {
        return Err(bad("link", "is longer than 2048 bytes"));
    }
    Ok(link)
}

/// `data`: an object, or absent.
fn optional_data(obj: &Map<String, Value>) -> Result<Option<Value>, Rejection> {
    match obj.get("data") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(bad("data", "must be an object")),
    }
}

fn valid_event(event: &str) -> bool {
    !event.is_empty()
        && event.len() <= 64
        && event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// Why a producer message was refused: the code maps to an HTTP status and a DLQ attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    BadRequest,
    TooLarge,
    /// An update or recall of an id that is not one of the tenant's notifications.
    NotFound,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::BadRequest => "bad_request",
            RejectCode::TooLarge => "too_large",
            RejectCode::NotFound => "not_found",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Rejection {
    pub code: RejectCode,
    pub field: String,
    pub reason: String,
}

/// An update or recall of an id that is not one of the tenant's (live) notifications.
pub fn not_found(field: &str, reason: impl Into<String>) -> Rejection {
    Rejection {
        code: RejectCode::NotFound,
        field: field.into(),
        reason: reason.into(),
    }
}

fn bad(field: &str, reason: impl Into<String>) -> Rejection {
    Rejection {
        code: RejectCode::BadRequest,
        field: field.into(),
        reason: reason.into(),
    }
}

/// Limits that apply while parsing.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub payload_budget: usize,
    pub retention_seconds: u64,
    /// The shortest `escalate.afterSeconds` accepted.
    pub escalate_min_seconds: u64,
}

impl From<&Limits> for ParseLimits {
    fn from(limits: &Limits) -> Self {
        Self {
            payload_budget: limits.payload_budget,
            retention_seconds: limits.retention_seconds,
            escalate_min_seconds: limits.escalate_min_seconds,
        }
    }
}

pub fn parse_producer_message(body: &str, limits: ParseLimits) -> Result<ProducerMessage, Rejection> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection {
            code: RejectCode::TooLarge,
            field: "message".into(),
            reason: format!("{} bytes exceeds {MAX_MESSAGE_BYTES}", body.len()),
        });
    }
    let value: Value = serde_json::from_str(body).map_err(|e| bad("message", format!("not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(bad("message", "must be a JSON object"));
    };
    if obj.contains_key("control") {
        return parse_control(&obj).map(ProducerMessage::Control);
    }
    if obj.contains_key("update") || obj.contains_key("recall") {
        return parse_revision(&obj, limits).map(ProducerMessage::Revise);
    }
    parse_notification(&obj, limits).map(ProducerMessage::Notify)
}

const NOTIFICATION_FIELDS: &[&str] = &[
    "id",
    "tenant",
    "to",
    "event",
    "title",
    "body",
    "link",
    "data",
    "deliverAt",
    "ttlSeconds",
    "collapse",
    "escalate",
    "push",
    "urgency",
    "critical",
];

/// Longest `collapse` key.
pub const MAX_COLLAPSE_KEY: usize = 128;

/// A `collapse` key: 1..=128 bytes without control characters.
pub fn valid_collapse_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_COLLAPSE_KEY && !key.chars().any(char::is_control)
}

fn parse_notification(obj: &Map<String, Value>, limits: ParseLimits) -> Result<NotificationRequest, Rejection> {
    reject_unknown(obj, NOTIFICATION_FIELDS)?;
    let id = optional_str(obj, "id")?
        .map(|id| validate_message_id(&id).map(|_| id))
        .transpose()?;
    let tenant = tenant(obj)?;
    let to = parse_target(obj.get("to").ok_or_else(|| bad("to", "is required"))?)?;
    let event = required_str(obj, "event")?;
    if !valid_event(&event) {
        return Err(bad("event", "must match [A-Za-z0-9._:-]{1,64}"));
    }
    let title = optional_title(obj)?;
    let body = optional_str(obj, "body")?;
    let link = optional_link(obj)?;
    let data = optional_data(obj)?;
    let deliver_at = match optional_str(obj, "deliverAt")? {
        None => None,
        Some(s) => {
            let at = DateTime::parse_from_rfc3339(&s)
                .map_err(|_| bad("deliverAt", "must be an RFC 3339 timestamp"))?
                .with_timezone(&Utc);
            if at > Utc::now() + chrono::Duration::days(MAX_DELAY_DAYS) {
                return Err(bad("deliverAt", format!("is more than {MAX_DELAY_DAYS} days ahead")));
            }
            Some(at)
        }
    };
    let ttl_seconds = match obj.get("ttlSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let ttl = v.as_u64().ok_or_else(|| bad("ttlSeconds", "must be a positive integer"))?;
            if !(60..=limits.retention_seconds).contains(&ttl) {
                return Err(bad("ttlSeconds", format!("must be within 60..={}", limits.retention_seconds)));
            }
            Some(ttl)
        }
    };
    let collapse = optional_str(obj, "collapse")?;
    if collapse.as_deref().is_some_and(|k| !valid_collapse_key(k)) {
        return Err(bad("collapse", "must be 1..=128 bytes without control characters"));
    }
    // Client publishes' keys live under `~{user}~`; a producer's never reaches into them.
    if collapse.as_deref().is_some_and(|k| k.starts_with(USER_SCOPE)) {
        return Err(bad("collapse", "keys starting with ~ are reserved for client publishes"));
    }
    let escalate_after = match obj.get("escalate") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_escalate(v, &to, limits)?),
    };
    let push = parse_push(obj, &to)?;
    let critical = optional_bool(obj, "critical")?;
    let request = NotificationRequest {
        escalate_after,
        id,
        tenant,
        to,
        content: Content {
            event,
            title,
            body,
            link,
            data,
            collapse,
            from: None,
            version: None,
            critical,
            recalled: false,
        },
        deliver_at,
        ttl_seconds,
        push,
    };
    check_budget(&request, limits.payload_budget)?;
    Ok(request)
}

/// `"push"` and `"urgency"`. Push reaches the users a notification names (`user`, `users`):
/// the members of a group, the tenant or the platform are known to Herald only while they are
/// connected, which is exactly when a push is not needed (docs/DESIGN.md).
fn parse_push(obj: &Map<String, Value>, to: &Target) -> Result<Option<PushRequest>, Rejection> {
    let always = match obj.get("push") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {
            if obj.get("urgency").is_some_and(|u| !u.is_null()) {
                return Err(bad("urgency", "applies only with push"));
            }
            return Ok(None);
        }
        Some(Value::Bool(true)) => false,
        Some(Value::String(s)) if s == "always" => true,
        Some(_) => return Err(bad("push", "must be true or \"always\"")),
    };
    if !matches!(to, Target::User(_) | Target::Users(_)) {
        return Err(bad("push", "applies to user and users targets only"));
    }
    let urgency = match optional_str(obj, "urgency")? {
        None => Urgency::Normal,
        Some(u) => Urgency::parse(&u).ok_or_else(|| bad("urgency", "must be very-low, low, normal or high"))?,
    };
    Ok(Some(PushRequest { always, urgency }))
}

/// Refuses a notification whose frame would exceed the budget, by rendering the largest frame it
/// can produce (longest topic, a full-length id and cursor) rather than estimating.
pub fn check_budget(request: &NotificationRequest, budget: usize) -> Result<(), Rejection> {
    let budget = budget.min(FRAME_HARD_CAP);
    let topic = request
        .to
        .topics()
        .into_iter()
        .map(|g| g.to_string())
        .max_by_key(String::len)
        .unwrap_or_default();
    let entry = LogEntry {
        id: request.id.clone().unwrap_or_else(|| "x".repeat(64)),
        cursor: Cursor::MIN,
        topic,
        content: request.content.clone(),
        created_at: "2000-01-01T00:00:00Z".into(),
    };
    let size = entry.frame(true).len();
    if size > budget {
        return Err(Rejection {
            code: RejectCode::TooLarge,
            field: "message".into(),
            reason: format!("the notification frame is {size} bytes; the budget is {budget}"),
        });
    }
    Ok(())
}

/// `"escalate":{"afterSeconds":n}`: the delay, from the configured minimum up to
/// [`ESCALATE_MAX_SECONDS`] or the retention, whichever is shorter (a read mark lives as long
/// as the retention: a longer wait could find the mark of a read one gone and escalate it).
///
/// Only notifications to users (`user`, `users`) escalate: "none of the user's devices has read
/// it" is a question about one known person. A group, the tenant or everyone is an audience
/// that changes while the notification waits, with members who were never meant to get an
/// email for it (and a tenant-wide escalation would be one queue message per user of the
/// tenant); a producer that wants some members escalated names them in `users`. So `escalate`
/// with any other target is rejected, with that reason, rather than silently ignored.
fn parse_escalate(v: &Value, to: &Target, limits: ParseLimits) -> Result<u64, Rejection> {
    let (min_seconds, max_seconds) = (limits.escalate_min_seconds, ESCALATE_MAX_SECONDS.min(limits.retention_seconds));
    let Value::Object(obj) = v else {
        return Err(bad("escalate", "must be an object like {\"afterSeconds\":900}"));
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "afterSeconds") {
        return Err(bad(&format!("escalate.{k}"), "is not a known field"));
    }
    let range = format!("must be an integer number of seconds within {min_seconds}..={max_seconds}");
    let after = obj
        .get("afterSeconds")
        .ok_or_else(|| bad("escalate.afterSeconds", "is required"))?
        .as_u64()
        .ok_or_else(|| bad("escalate.afterSeconds", range.clone()))?;
    if !(min_seconds..=max_seconds).contains(&after) {
        return Err(bad("escalate.afterSeconds", range));
    }
    if !matches!(to, Target::User(_) | Target::Users(_)) {
        return Err(bad(
            "escalate",
            "only notifications to users (to.user, to.users) escalate; name the users to escalate to in to.users",
        ));
    }
    Ok(after)
}

fn parse_target(v: &Value) -> Result<Target, Rejection> {
    let Value::Object(obj) = v else {
        return Err(bad("to", "must be an object"));
    };
    if obj.len() != 1 {
        return Err(bad("to", "must have exactly one of user, users, group, tenant, all"));
    }
    let (key, value) = obj.iter().next().ok_or_else(|| bad("to", "is empty"))?;
    match (key.as_str(), value) {
        ("user", Value::String(u)) => valid_user(u, "to.user").map(|_| Target::User(u.clone())),
        ("users", Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_USERS {
                return Err(bad("to.users", format!("must list 1..={MAX_USERS} users")));
            }
            let mut users: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let u = item.as_str().ok_or_else(|| bad("to.users", "must be strings"))?;
                valid_user(u, "to.users")?;
                if !users.iter().any(|x| x == u) {
                    users.push(u.to_owned());
                }
            }
            Ok(Target::Users(users))
        }
        ("group", Value::String(g)) => match Group::parse(g).map_err(|e| bad("to.group", e.to_string()))? {
            Group::User(u) => Ok(Target::User(u)),
            Group::Tenant => Ok(Target::Tenant),
            Group::All => Ok(Target::All),
            named => Ok(Target::Group(named)),
        },
        ("tenant", Value::Bool(true)) => Ok(Target::Tenant),
        ("all", Value::Bool(true)) => Ok(Target::All),
        (k, _) => Err(bad(&format!("to.{k}"), "is not a valid target")),
    }
}

const CONTROL_FIELDS: &[&str] = &["control", "tenant", "user", "group", "id"];

fn parse_control(obj: &Map<String, Value>) -> Result<Control, Rejection> {
    reject_unknown(obj, CONTROL_FIELDS)?;
    let kind = required_str(obj, "control")?;
    let tenant = tenant(obj)?;
    match kind.as_str() {
        "subscribe" | "unsubscribe" => {
            let user = required_str(obj, "user")?;
            valid_user(&user, "user")?;
            let group = Group::parse(&required_str(obj, "group")?).map_err(|e| bad("group", e.to_string()))?;
            if !matches!(group, Group::Named { .. }) {
                return Err(bad("group", "only named groups (kind:id) take subscriptions"));
            }
            Ok(if kind == "subscribe" {
                Control::Subscribe { tenant, user, group }
            } else {
                Control::Unsubscribe { tenant, user, group }
            })
        }
        "cancel" => {
            let id = required_str(obj, "id")?;
            validate_message_id(&id)?;
            Ok(Control::Cancel { tenant, id })
        }
        other => Err(bad("control", format!("unknown control {other:?}"))),
    }
}

pub fn validate_message_id(id: &str) -> Result<(), Rejection> {
    // A user's own reminder id is `~{user}~{id}`: a user id and an id of up to 128 bytes each.
    // Otherwise no `#` (it separates the parts of Herald's own keys, e.g. the fan-out claims
    // `i#{tenant}#{id}#job#…`) and no `~` (users' scoped ids), so no id can pose as another key.
    let (scope, own) = match id.strip_prefix(USER_SCOPE) {
        Some(rest) => match rest.split_once(USER_SCOPE) {
            Some((user, own)) => (Some(user), own),
            None => (Some(""), rest),
        },
        None => (None, id),
    };
    if scope.is_some_and(|user| !valid_id(user, 128))
        || own.is_empty()
        || own.len() > 128
        || own.chars().any(|c| c.is_control() || c == '#' || c == USER_SCOPE)
    {
        return Err(bad("id", "must be 1..=128 characters without control characters, # or ~"));
    }
    Ok(())
}

/// Ids starting with this are reserved: they are users' own reminder ids ([`user_scoped_id`]).
pub const USER_SCOPE: char = '~';

/// Why a caller may not name an id starting with [`USER_SCOPE`].
pub const RESERVED_ID: &str = "id: ids starting with ~ are reserved for users' own reminders";

/// Whether `id` is in the users' reminder namespace, which no caller names directly.
pub fn is_reserved(id: &str) -> bool {
    id.starts_with(USER_SCOPE)
}

/// The notification id of a reminder a user set for themselves (`POST /reminders` without a
/// privileged role). Users and producers share a tenant, but not an id namespace: a user's
/// `grade-7781` never makes a service's notification `grade-7781` a duplicate.
pub fn user_scoped_id(user: &str, id: &str) -> String {
    format!("{USER_SCOPE}{user}{USER_SCOPE}{id}")
}

fn valid_user(u: &str, field: &str) -> Result<(), Rejection> {
    if valid_id(u, 128) {
        Ok(())
    } else {
        Err(bad(field, "user ids must match [A-Za-z0-9._-]{1,128}"))
    }
}

fn tenant(obj: &Map<String, Value>) -> Result<String, Rejection> {
    let t = required_str(obj, "tenant")?;
    validate_tenant(&t).map_err(|e| bad("tenant", e.to_string()))?;
    Ok(t)
}

fn reject_unknown(obj: &Map<String, Value>, known: &[&str]) -> Result<(), Rejection> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(k, "is not a known field")),
        None => Ok(()),
    }
}

fn required_str(obj: &Map<String, Value>, field: &str) -> Result<String, Rejection> {
    optional_str(obj, field)?.ok_or_else(|| bad(field, "is required"))
}

fn optional_bool(obj: &Map<String, Value>, field: &str) -> Result<bool, Rejection> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(field, "must be true or false")),
    }
}

fn optional_str(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, Rejection> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// A notification as the log holds it, under one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub id: String,
    pub cursor: Cursor,
    /// The group name the recipient knows it by (`course:42`, `user:u1`, `tenant`, `all`).
    pub topic: String,
    pub content: Content,
    pub created_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<Cursor>,
    topic: &'a str,
    #[serde(flatten)]
    content: &'a Content,
    created_at: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
}

impl LogEntry {
    /// The client frame (`{"type":"notification",...}`), as JSON text.
    pub fn frame(&self, replayed: bool) -> String {
        self.frame_with(Some(self.cursor), replayed)
    }

    /// The client frame without its cursor: for a reader that must not take it as a resume
    /// point yet (see `replay::ReadPlan::shows_cursor`).
    pub fn frame_without_cursor(&self, replayed: bool) -> String {
        self.frame_with(None, replayed)
    }

    fn frame_with(&self, cursor: Option<Cursor>, replayed: bool) -> String {
        if self.content.recalled {
            return recalled_frame(&self.id, &self.topic, cursor, replayed);
        }
        let frame = Frame {
            kind: "notification",
            id: &self.id,
            cursor,
            topic: &self.topic,
            content: &self.content,
            created_at: &self.created_at,
            replayed,
        };
        // Serializing plain strings and a `Value` cannot fail.
        serde_json::to_string(&frame).unwrap_or_default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecalledFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<Cursor>,
    topic: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
}

/// `{"type":"recalled","id","topic"[,"cursor"]}`: the producer took notification `id` back.
pub fn recalled_frame(id: &str, topic: &str, cursor: Option<Cursor>, replayed: bool) -> String {
    let frame = RecalledFrame {
        kind: "recalled",
        id,
        cursor,
        topic,
        replayed,
    };
    serde_json::to_string(&frame).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EphemeralFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    topic: &'a str,
    #[serde(flatten)]
    content: &'a Content,
    created_at: &'a str,
    ephemeral: bool,
}

/// The frame of an ephemeral client publish: a notification frame without a cursor (it is in
/// no log, so it is no resume point) and with `"ephemeral":true`.
pub fn ephemeral_frame(id: &str, topic: &str, content: &Content, created_at: &str) -> String {
    let frame = EphemeralFrame {
        kind: "notification",
        id,
        topic,
        content,
        created_at,
        ephemeral: true,
    };
    serde_json::to_string(&frame).unwrap_or_default()
}

/// A live frame for a connection that has not caught up yet: the same frame without its
/// `cursor`, which would not be a safe resume point there (see `horizon`). `None` when the frame
/// has no cursor to take out (an ephemeral one) or is not a JSON object.
pub fn without_cursor(frame: &str) -> Option<String> {
    let mut value: serde_json::Map<String, Value> = serde_json::from_str(frame).ok()?;
    value.remove("cursor")?;
    serde_json::to_string(&value).ok()
}

pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn now_rfc3339() -> String {
    format_time(&Utc::now())
}

/// The cursor length, exported for size reasoning elsewhere.
pub const CURSOR_LEN: usize = cursor::LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_without_its_cursor_keeps_everything_else() {
        let entry = LogEntry {
            id: "n1".into(),
            cursor: Cursor::from_parts(1, 2),
            topic: "user:u1".into(),
            content: Content {
                title: Some("a \"cursor\":\"x\" in the title".into()),
                ..Content::default()
            },
            created_at: "2026-12-06T00:00:00Z".into(),
        };
        let frame = entry.frame(false);
        let bare: Value = serde_json::from_str(&without_cursor(&frame).unwrap()).unwrap();
        let mut full: Value = serde_json::from_str(&frame).unwrap();
        full.as_object_mut().unwrap().remove("cursor");
        assert_eq!(bare, full);
        assert!(bare.get("cursor").is_none());
        let ephemeral = ephemeral_frame("e1", "room:7", &Content::default(), "2026-12-06T00:00:00Z");
        assert_eq!(without_cursor(&ephemeral), None, "nothing to take out");
        assert_eq!(without_cursor("not json"), None);
    }

    const LIMITS: ParseLimits = ParseLimits {
        payload_budget: 2048,
        retention_seconds: 604_800,
        escalate_min_seconds: 60,
    };

    fn parse(s: &str) -> Result<ProducerMessage, Rejection> {
        parse_producer_message(s, LIMITS)
    }

    fn notify(s: &str) -> NotificationRequest {
        match parse(s).unwrap() {
            ProducerMessage::Notify(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escalate_is_bounded_and_only_for_users() {
        let n = notify(r#"{"tenant":"acme","to":{"users":["u1","u2"]},"event":"e","escalate":{"afterSeconds":900}}"#);
        assert_eq!(n.escalate_after, Some(900));
        // It survives the round trip through a deferral or a schedule.
        let again = notify(&n.to_json().to_string());
        assert_eq!(again.escalate_after, Some(900));
        for (escalate, field) in [
            (r#"{"afterSeconds":59}"#, "escalate.afterSeconds"),
            (r#"{"afterSeconds":604801}"#, "escalate.afterSeconds"),
            (r#"{"afterSeconds":-5}"#, "escalate.afterSeconds"),
            (r#"{"afterSeconds":"900"}"#, "escalate.afterSeconds"),
            (r#"{}"#, "escalate.afterSeconds"),
            (r#"{"afterSeconds":900,"via":"sms"}"#, "escalate.via"),
            (r#"900"#, "escalate"),
        ] {
            let msg = format!(r#"{{"tenant":"acme","to":{{"user":"u1"}},"event":"e","escalate":{escalate}}}"#);
            let err = parse(&msg).unwrap_err();
            assert_eq!((err.code, err.field.as_str()), (RejectCode::BadRequest, field), "{escalate}: {err}");
        }
        let err = parse(r#"{"tenant":"acme","to":{"group":"course:1"},"event":"e","escalate":{"afterSeconds":900}}"#).unwrap_err();
        assert_eq!(err.field, "escalate");
        assert!(err.reason.contains("only notifications to users"), "{err}");
        assert!(parse(r#"{"tenant":"acme","to":{"all":true},"event":"e","escalate":{"afterSeconds":900}}"#).is_err());
        // A test stack's shorter minimum.
        let quick = ParseLimits {
            escalate_min_seconds: 1,
            ..LIMITS
        };
        let ok = parse_producer_message(
            r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","escalate":{"afterSeconds":2}}"#,
            quick,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// Client publishes' collapse keys are `~{user}~{key}`: a producer's never reaches into them.
    #[test]
    fn producer_collapse_keys_cannot_be_a_clients() {
        let err = parse(r#"{"tenant":"acme","to":{"group":"room:7"},"event":"e","collapse":"~alice~score"}"#).unwrap_err();
        assert_eq!((err.code, err.field.as_str()), (RejectCode::BadRequest, "collapse"), "{err}");
        assert_eq!(
            notify(r#"{"tenant":"acme","to":{"group":"room:7"},"event":"e","collapse":"a~b"}"#)
                .content
                .collapse
                .as_deref(),
            Some("a~b")
        );
    }

    /// `#` separates the parts of Herald's own keys (`i#{tenant}#{id}#job#…` are fan-out claims)
    /// and `~` users' scoped ids: a producer id with either could pose as one of them.
    #[test]
    fn producer_ids_cannot_hold_key_separators() {
        for id in ["a#b", "x#job#0#", "a~b", "~u1~", "~~x", "~u#1~x", "~u1~a~b", "~u1~a#b"] {
            let msg = format!(r#"{{"id":"{id}","tenant":"acme","to":{{"user":"u1"}},"event":"e"}}"#);
            let err = parse(&msg).unwrap_err();
            assert_eq!((err.code, err.field.as_str()), (RejectCode::BadRequest, "id"), "{id}: {err}");
        }
        // A user's own reminder id, as dispatch sees it when the reminder fires.
        for id in ["grade-7781", "~u1~rem-1", "n.1_x"] {
            let msg = format!(r#"{{"id":"{id}","tenant":"acme","to":{{"user":"u1"}},"event":"e"}}"#);
            assert!(parse(&msg).is_ok(), "{id}");
        }
    }

    #[test]
    fn parses_every_target_kind() {
        let n = notify(r#"{"tenant":"acme","to":{"user":"u1"},"event":"assignment.graded","title":"Graded"}"#);
        assert_eq!(n.to, Target::User("u1".into()));
        let n = notify(r#"{"tenant":"acme","to":{"users":["u1","u2","u1"]},"event":"e"}"#);
        assert_eq!(n.to, Target::Users(vec!["u1".into(), "u2".into()]));
        assert_eq!(n.to.topics().len(), 2);
        let n = notify(r#"{"tenant":"acme","to":{"group":"course:42"},"event":"class.starting","data":{"k":1}}"#);
        assert_eq!(n.to, Target::Group(Group::parse("course:42").unwrap()));
        assert_eq!(notify(r#"{"tenant":"acme","to":{"tenant":true},"event":"e"}"#).to, Target::Tenant);
        assert_eq!(notify(r#"{"tenant":"acme","to":{"all":true},"event":"e"}"#).to, Target::All);
        assert_eq!(
            notify(r#"{"tenant":"acme","to":{"group":"user:u9"},"event":"e"}"#).to,
            Target::User("u9".into())
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[]", "message"),
            ("nope", "message"),
            (r#"{"to":{"user":"u1"},"event":"e"}"#, "tenant"),
            (r#"{"tenant":"a#b","to":{"user":"u1"},"event":"e"}"#, "tenant"),
            (r#"{"tenant":"acme","event":"e"}"#, "to"),
            (r#"{"tenant":"acme","to":{},"event":"e"}"#, "to"),
            (r#"{"tenant":"acme","to":{"user":"u1","all":true},"event":"e"}"#, "to"),
            (r#"{"tenant":"acme","to":{"group":"Bad"},"event":"e"}"#, "to.group"),
            (r#"{"tenant":"acme","to":{"users":[]},"event":"e"}"#, "to.users"),
            (r#"{"tenant":"acme","to":{"all":false},"event":"e"}"#, "to.all"),
            (r#"{"tenant":"acme","to":{"user":"u1"}}"#, "event"),
            (r#"{"tenant":"acme","to":{"user":"u1"},"event":"has space"}"#, "event"),
            (r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","data":[1]}"#, "data"),
            (
                r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","deliverAt":"tomorrow"}"#,
                "deliverAt",
            ),
            (r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","ttlSeconds":5}"#, "ttlSeconds"),
            (r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","colour":"red"}"#, "colour"),
            (r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","id":""}"#, "id"),
            (r#"{"control":"explode","tenant":"acme"}"#, "control"),
            (r#"{"control":"subscribe","tenant":"acme","user":"u1","group":"tenant"}"#, "group"),
            (r#"{"control":"cancel","tenant":"acme"}"#, "id"),
        ];
        for (input, field) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
            assert_eq!(err.code, RejectCode::BadRequest);
        }
    }

    #[test]
    fn oversize_is_too_large() {
        let body = "x".repeat(3000);
        let err = parse(&format!(r#"{{"tenant":"acme","to":{{"user":"u1"}},"event":"e","body":"{body}"}}"#)).unwrap_err();
        assert_eq!(err.code, RejectCode::TooLarge);
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert_eq!(parse(&big).unwrap_err().code, RejectCode::TooLarge);
        // A bigger configured budget lets it through, but never past the 32 KB hard cap.
        let roomy = ParseLimits {
            payload_budget: 8192,
            ..LIMITS
        };
        assert!(
            parse_producer_message(
                &format!(r#"{{"tenant":"acme","to":{{"user":"u1"}},"event":"e","body":"{body}"}}"#),
                roomy
            )
            .is_ok()
        );
    }

    #[test]
    fn parses_controls() {
        assert_eq!(
            parse(r#"{"control":"subscribe","tenant":"acme","user":"u1","group":"course:42"}"#).unwrap(),
            ProducerMessage::Control(Control::Subscribe {
                tenant: "acme".into(),
                user: "u1".into(),
                group: Group::parse("course:42").unwrap()
            })
        );
        assert_eq!(
            parse(r#"{"control":"cancel","tenant":"acme","id":"r-1"}"#).unwrap(),
            ProducerMessage::Control(Control::Cancel {
                tenant: "acme".into(),
                id: "r-1".into()
            })
        );
    }

    #[test]
    fn wire_format_round_trips() {
        let src = r#"{"id":"n1","tenant":"acme","to":{"group":"course:42"},"event":"e","title":"t","body":"b","link":"/l","data":{"x":[1]},"deliverAt":"2027-06-01T00:00:00Z","ttlSeconds":3600}"#;
        let n = notify(src);
        let again = notify(&n.to_json().to_string());
        assert_eq!(n, again);
    }

    #[test]
    fn push_is_for_named_users_and_round_trips() {
        let n = notify(r#"{"tenant":"acme","to":{"users":["u1"]},"event":"e","push":"always","urgency":"high"}"#);
        assert_eq!(
            n.push,
            Some(PushRequest {
                always: true,
                urgency: Urgency::High
            })
        );
        assert_eq!(notify(&n.to_json().to_string()), n);
        let n = notify(r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","push":true}"#);
        assert_eq!(
            n.push,
            Some(PushRequest {
                always: false,
                urgency: Urgency::Normal
            })
        );
        assert_eq!(notify(&n.to_json().to_string()), n);
        assert_eq!(
            notify(r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","push":false}"#).push,
            None
        );
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"tenant":"acme","to":{"group":"course:1"},"event":"e","push":true}"#),
            "push: applies to user and users targets only"
        );
        assert_eq!(
            err(r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","push":"yes"}"#),
            "push: must be true or \"always\""
        );
        assert_eq!(
            err(r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","push":true,"urgency":"now"}"#),
            "urgency: must be very-low, low, normal or high"
        );
        assert_eq!(
            err(r#"{"tenant":"acme","to":{"user":"u1"},"event":"e","urgency":"high"}"#),
            "urgency: applies only with push"
        );
    }

    #[test]
    fn frame_has_the_contract_shape() {
        let entry = LogEntry {
            id: "n1".into(),
            cursor: Cursor::from_parts(1, 2),
            topic: "course:42".into(),
            content: Content {
                event: "class.starting".into(),
                title: Some("Soon".into()),
                ..Default::default()
            },
            created_at: "2026-11-23T10:00:00Z".into(),
        };
        let v: Value = serde_json::from_str(&entry.frame(false)).unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(v["id"], "n1");
        assert_eq!(v["topic"], "course:42");
        assert_eq!(v["event"], "class.starting");
        assert_eq!(v["createdAt"], "2026-11-23T10:00:00Z");
        assert_eq!(v["cursor"].as_str().unwrap().len(), CURSOR_LEN);
        assert!(v.get("replayed").is_none() && v.get("body").is_none());
        let v: Value = serde_json::from_str(&entry.frame(true)).unwrap();
        assert_eq!(v["replayed"], true);
    }
}
