//! Client ↔ server WebSocket frames (DESIGN.md, "Client ↔ WebSocket contract").
//!
//! Parsing is strict and total: anything a client sends becomes either a [`ClientFrame`] or an
//! [`ErrorFrame`] with the DESIGN code, never a dropped message or a failed invocation.

use serde::Serialize;
use serde_json::Value;

/// API Gateway's frame limit; the local stack and AWS close the socket beyond it anyway.
pub const MAX_CLIENT_FRAME: usize = 32 * 1024;
pub const MAX_ACK_IDS: usize = 100;
const MAX_REF_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Join {
        group: String,
        reference: Option<Value>,
    },
    Leave {
        group: String,
        reference: Option<Value>,
    },
    /// `since`: any cursor the client holds; `page`: the `next` of the previous page; `have`:
    /// ids the client already holds (received live): not posted again, but read past like any
    /// other entry.
    Resume {
        since: Option<String>,
        page: Option<String>,
        have: Vec<String>,
        reference: Option<Value>,
    },
    Ack {
        ids: Vec<String>,
        reference: Option<Value>,
    },
    Ping {
        reference: Option<Value>,
    },
    /// Boxed: it is much bigger than the other frames.
    Publish(Box<PublishFrame>),
    /// `{"action":"read","group":"room:7","upTo":"CURSOR"}`: a read receipt for a conversation
    /// (`services::chat`). Checked there: the cursor, and that the user is a member.
    Read {
        group: String,
        up_to: String,
        reference: Option<Value>,
    },
}

/// `{"action":"publish","group":"room:7","event":"chat.message","title","body","data",
/// "ephemeral":false,"echo":false,"id":"optional","ref":"p1"}`. Who may publish is not decided
/// here (see `policy::PublishPolicy`); `from` is never read from the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishFrame {
    pub group: String,
    /// The client's idempotency key (a retry after a reconnect sends it again), in the
    /// publisher's own namespace.
    pub id: Option<String>,
    pub event: String,
    pub title: Option<String>,
    pub body: Option<String>,
    pub data: Option<Value>,
    pub ephemeral: bool,
    pub echo: bool,
    /// A latest-value stream's key (see `notification::Content::collapse`).
    pub collapse: Option<String>,
    pub reference: Option<Value>,
}

const PUBLISH_FIELDS: &[&str] = &[
    "action",
    "group",
    "id",
    "event",
    "title",
    "body",
    "data",
    "ephemeral",
    "echo",
    "collapse",
    "ref",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnknownAction,
    BadRequest,
    Forbidden,
    TooLarge,
    RateLimited,
    Internal,
}

/// `{"type":"error","code":...,"message":...,"ref":...}`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    pub code: ErrorCode,
    pub message: String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<Value>,
    /// With `rate_limited`: when the next frame fits the connection's budget.
    #[serde(rename = "retryAfterMs", skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>, reference: Option<Value>) -> Self {
        Self {
            kind: "error",
            code,
            message: message.into(),
            reference,
            retry_after_ms: None,
        }
    }

    /// `{"type":"error","code":"rate_limited","retryAfterMs":N}`: the frame was not acted on.
    pub fn rate_limited(retry_after_ms: u64, reference: Option<Value>) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(
                ErrorCode::RateLimited,
                format!("frame budget exceeded; send again in {retry_after_ms} ms"),
                reference,
            )
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ClientFrame {
    /// The client's `ref`, echoed in the answer.
    pub fn reference(&self) -> Option<&Value> {
        match self {
            Self::Join { reference, .. }
            | Self::Leave { reference, .. }
            | Self::Resume { reference, .. }
            | Self::Ack { reference, .. }
            | Self::Ping { reference }
            | Self::Read { reference, .. } => reference.as_ref(),
            Self::Publish(p) => p.reference.as_ref(),
        }
    }
}

/// Serializes a reply frame such as `{"type":"joined","group":..,"ref":..}`.
pub fn reply(kind: &str, mut fields: serde_json::Map<String, Value>, reference: Option<Value>) -> String {
    fields.insert("type".into(), Value::String(kind.to_owned()));
    if let Some(r) = reference {
        fields.insert("ref".into(), r);
    }
    Value::Object(fields).to_string()
}

/// Parses a text frame from a client.
pub fn parse(body: &str) -> Result<ClientFrame, ErrorFrame> {
    if body.len() > MAX_CLIENT_FRAME {
        return Err(ErrorFrame::new(
            ErrorCode::TooLarge,
            format!("frames are limited to {MAX_CLIENT_FRAME} bytes"),
            None,
        ));
    }
    let value: Value = serde_json::from_str(body).map_err(|_| ErrorFrame::new(ErrorCode::BadRequest, "frame is not JSON", None))?;
    let Value::Object(obj) = value else {
        return Err(ErrorFrame::new(ErrorCode::BadRequest, "frame must be a JSON object", None));
    };
    // The ref is echoed back even on errors, so clients can match them to their request; only
    // short strings and numbers are echoed so a client cannot make the server amplify data.
    let reference = match obj.get("ref") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(s)) if s.len() <= MAX_REF_LEN => Some(v.clone()),
        Some(v @ Value::Number(_)) => Some(v.clone()),
        Some(_) => {
            return Err(ErrorFrame::new(
                ErrorCode::BadRequest,
                "ref must be a string of at most 64 bytes or a number",
                None,
            ));
        }
    };
    let err = |code, msg: &str| ErrorFrame::new(code, msg, reference.clone());
    let action = match obj.get("action") {
        Some(Value::String(a)) => a.as_str(),
        None => return Err(err(ErrorCode::BadRequest, "frame has no action")),
        Some(_) => return Err(err(ErrorCode::BadRequest, "action must be a string")),
    };
    let group = || match obj.get("group") {
        Some(Value::String(g)) => Ok(g.clone()),
        _ => Err(err(ErrorCode::BadRequest, "group must be a string")),
    };
    match action {
        "join" => Ok(ClientFrame::Join {
            group: group()?,
            reference,
        }),
        "leave" => Ok(ClientFrame::Leave {
            group: group()?,
            reference,
        }),
        "resume" => {
            let since = match obj.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(err(ErrorCode::BadRequest, "since must be a cursor string")),
            };
            let page = match obj.get("page") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(err(ErrorCode::BadRequest, "page must be the string `next` of the previous page")),
            };
            let have = match obj.get("have") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => id_list(v, "have", 0).map_err(|m| err(ErrorCode::BadRequest, &m))?,
            };
            Ok(ClientFrame::Resume {
                since,
                page,
                have,
                reference,
            })
        }
        "ack" => {
            let ids = id_list(obj.get("ids").unwrap_or(&Value::Null), "ids", 1).map_err(|m| err(ErrorCode::BadRequest, &m))?;
            Ok(ClientFrame::Ack { ids, reference })
        }
        "ping" => Ok(ClientFrame::Ping { reference }),
        "read" => {
            let up_to = match obj.get("upTo") {
                Some(Value::String(c)) if c.len() <= 64 => c.clone(),
                _ => return Err(err(ErrorCode::BadRequest, "upTo must be a cursor string")),
            };
            Ok(ClientFrame::Read {
                group: group()?,
                up_to,
                reference,
            })
        }
        "publish" => publish(&obj, reference).map(|p| ClientFrame::Publish(Box::new(p))),
        other => Err(ErrorFrame::new(
            ErrorCode::UnknownAction,
            format!("unknown action {:?}", truncate(other, 32)),
            reference,
        )),
    }
}

fn publish(obj: &serde_json::Map<String, Value>, reference: Option<Value>) -> Result<PublishFrame, ErrorFrame> {
    let err = |msg: String| ErrorFrame::new(ErrorCode::BadRequest, msg, reference.clone());
    if let Some(k) = obj.keys().find(|k| !PUBLISH_FIELDS.contains(&k.as_str())) {
        return Err(err(format!("{:?} is not a field of publish", truncate(k, 32))));
    }
    let text = |field: &str| match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err(format!("{field} must be a string"))),
    };
    let flag = |field: &str| match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(err(format!("{field} must be true or false"))),
    };
    let group = text("group")?.ok_or_else(|| err("group must be a string".into()))?;
    let event = text("event")?.ok_or_else(|| err("event is required".into()))?;
    if event.is_empty()
        || event.len() > 64
        || !event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
    {
        return Err(err("event must match [A-Za-z0-9._:-]{1,64}".into()));
    }
    let id = text("id")?;
    if id.as_deref().is_some_and(|i| !crate::domain::groups::valid_id(i, 64)) {
        return Err(err("id must match [A-Za-z0-9._-]{1,64}".into()));
    }
    let title = text("title")?;
    if title.as_ref().is_some_and(|t| t.chars().count() > 256) {
        return Err(err("title is longer than 256 characters".into()));
    }
    let data = match obj.get("data") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(err("data must be an object".into())),
    };
    let collapse = text("collapse")?;
    if collapse
        .as_deref()
        .is_some_and(|k| !crate::domain::notification::valid_collapse_key(k))
    {
        return Err(err("collapse must be 1..=128 bytes without control characters".into()));
    }
    Ok(PublishFrame {
        collapse,
        group,
        id,
        event,
        title,
        body: text("body")?,
        data,
        ephemeral: flag("ephemeral")?,
        echo: flag("echo")?,
        reference,
    })
}

/// An array of `min..=100` notification ids (non-empty strings of at most 128 bytes).
fn id_list(value: &Value, field: &str, min: usize) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!("{field} must be an array of notification ids"));
    };
    if items.len() < min || items.len() > MAX_ACK_IDS {
        return Err(format!("{field} must hold {min}..={MAX_ACK_IDS} notification ids"));
    }
    items
        .iter()
        .map(|i| i.as_str().filter(|s| !s.is_empty() && s.len() <= 128).map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| format!("{field} must be non-empty strings of at most 128 bytes"))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// API Gateway bills a WebSocket message per started 32 KB: what a batch frame may hold.
pub const MESSAGE_UNIT: usize = 32 * 1024;

const BATCH_OPEN: &str = r#"{"type":"batch","frames":["#;
const BATCH_CLOSE: &str = "]}";

/// Packs server frames (each a JSON object's text), in order, into as few WebSocket messages of
/// at most `max` bytes as they fit: `{"type":"batch","frames":[…]}` for two or more, the frame
/// itself for one alone (so a frame too big to wrap still goes). Each message comes with the
/// number of frames it carries. For connections that opted in to batch frames.
pub fn batch<S: AsRef<str>>(frames: &[S], max: usize) -> Vec<(String, usize)> {
    let wrap = BATCH_OPEN.len() + BATCH_CLOSE.len();
    let mut messages = Vec::new();
    let mut group: Vec<&str> = Vec::new();
    let mut bytes = wrap;
    let flush = |group: &mut Vec<&str>, messages: &mut Vec<(String, usize)>| match group.len() {
        0 => {}
        1 => messages.push((group[0].to_owned(), 1)),
        n => {
            let mut text = String::with_capacity(wrap + group.iter().map(|f| f.len() + 1).sum::<usize>());
            text.push_str(BATCH_OPEN);
            text.push_str(&group.join(","));
            text.push_str(BATCH_CLOSE);
            messages.push((text, n));
        }
    };
    for frame in frames {
        let frame = frame.as_ref();
        // A separating comma after the first frame of a batch.
        let cost = frame.len() + usize::from(!group.is_empty());
        if !group.is_empty() && bytes + cost > max {
            flush(&mut group, &mut messages);
            group.clear();
            bytes = wrap;
        }
        bytes += frame.len() + usize::from(!group.is_empty());
        group.push(frame);
    }
    flush(&mut group, &mut messages);
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_action() {
        assert_eq!(
            parse(r#"{"action":"join","group":"course:42","ref":"c1"}"#).unwrap(),
            ClientFrame::Join {
                group: "course:42".into(),
                reference: Some(json!("c1"))
            }
        );
        assert!(matches!(
            parse(r#"{"action":"leave","group":"x:1"}"#).unwrap(),
            ClientFrame::Leave { .. }
        ));
        assert_eq!(
            parse(r#"{"action":"resume","since":"0ABC","ref":3}"#).unwrap(),
            ClientFrame::Resume {
                since: Some("0ABC".into()),
                page: None,
                have: Vec::new(),
                reference: Some(json!(3))
            }
        );
        assert_eq!(
            parse(r#"{"action":"resume","since":"0ABC","have":["a","b"]}"#).unwrap(),
            ClientFrame::Resume {
                since: Some("0ABC".into()),
                page: None,
                have: vec!["a".into(), "b".into()],
                reference: None
            }
        );
        assert_eq!(parse(r#"{"action":"resume","have":"a"}"#).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse(r#"{"action":"resume","have":[""]}"#).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(
            parse(r#"{"action":"ack","ids":["a","b"]}"#).unwrap(),
            ClientFrame::Ack {
                ids: vec!["a".into(), "b".into()],
                reference: None
            }
        );
        assert_eq!(
            parse(r#"{"action":"ping","ref":"c5"}"#).unwrap(),
            ClientFrame::Ping {
                reference: Some(json!("c5"))
            }
        );
        assert_eq!(
            parse(r#"{"action":"read","group":"room:7","upTo":"01M94V732ZCQKGB1B3F50QXQW8","ref":"r1"}"#).unwrap(),
            ClientFrame::Read {
                group: "room:7".into(),
                up_to: "01M94V732ZCQKGB1B3F50QXQW8".into(),
                reference: Some(json!("r1"))
            }
        );
        for bad in [
            r#"{"action":"read","group":"room:7"}"#,
            r#"{"action":"read","upTo":"x"}"#,
            r#"{"action":"read","group":"room:7","upTo":7}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn malformed_frames_get_error_codes_with_ref() {
        let e = parse(r#"{"action":"dance","ref":"r9"}"#).unwrap_err();
        assert_eq!((e.code, e.reference.clone()), (ErrorCode::UnknownAction, Some(json!("r9"))));
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "unknown_action");
        assert_eq!(v["ref"], "r9");
        assert_eq!(parse("{nope").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse("[1]").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse(r#"{"group":"x:1"}"#).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse(r#"{"action":"join","ref":"a"}"#).unwrap_err().reference, Some(json!("a")));
        assert_eq!(parse(r#"{"action":"ack","ids":[]}"#).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse(r#"{"action":"ack","ids":[1]}"#).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse(r#"{"action":"ping","ref":{"a":1}}"#).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse(&"x".repeat(MAX_CLIENT_FRAME + 1)).unwrap_err().code, ErrorCode::TooLarge);
    }

    #[test]
    fn publish_frames_are_checked_field_by_field() {
        let ClientFrame::Publish(p) =
            parse(r#"{"action":"publish","group":"room:7","event":"chat.message","body":"hi","data":{"a":1},"ephemeral":true,"ref":"p1"}"#)
                .unwrap()
        else {
            panic!("not a publish frame")
        };
        assert_eq!(
            (p.group.as_str(), p.event.as_str(), p.ephemeral, p.echo),
            ("room:7", "chat.message", true, false)
        );
        assert_eq!(p.reference, Some(json!("p1")));
        for (bad, why) in [
            (r#"{"action":"publish","group":"room:7"}"#, "event is required"),
            (r#"{"action":"publish","group":"room:7","event":"a b"}"#, "event must match"),
            (
                r#"{"action":"publish","group":"room:7","event":"e","from":{"user":"x"}}"#,
                "\"from\" is not a field",
            ),
            (
                r#"{"action":"publish","group":"room:7","event":"e","echo":"yes"}"#,
                "echo must be true or false",
            ),
            (
                r#"{"action":"publish","group":"room:7","event":"e","data":[1]}"#,
                "data must be an object",
            ),
            (r#"{"action":"publish","group":"room:7","event":"e","id":"a/b"}"#, "id must match"),
            (r#"{"action":"publish","event":"e","ref":"r"}"#, "group must be a string"),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn rate_limited_frames_say_when_to_send_again() {
        let v: Value = serde_json::from_str(&ErrorFrame::rate_limited(50, Some(json!(7))).to_json()).unwrap();
        assert_eq!(
            (v["type"].clone(), v["code"].clone(), v["retryAfterMs"].clone(), v["ref"].clone()),
            (json!("error"), json!("rate_limited"), json!(50), json!(7))
        );
    }

    #[test]
    fn replies_carry_type_and_ref() {
        let mut m = serde_json::Map::new();
        m.insert("group".into(), json!("course:42"));
        let v: Value = serde_json::from_str(&reply("joined", m, Some(json!("c1")))).unwrap();
        assert_eq!(v, json!({"type":"joined","group":"course:42","ref":"c1"}));
    }

    #[test]
    fn batches_keep_order_fit_the_unit_and_leave_a_lone_frame_unwrapped() {
        let frames: Vec<String> = (0..100)
            .map(|i| json!({"type": "notification", "id": format!("n{i}"), "body": "x".repeat(900)}).to_string())
            .collect();
        let messages = batch(&frames, MESSAGE_UNIT);
        assert_eq!(messages.len(), 3, "about 95 KB of frames");
        let mut unpacked = Vec::new();
        for (text, n) in &messages {
            // Full: the next frame would not have fitted.
            if unpacked.len() + n < frames.len() {
                assert!(text.len() + 1 + frames[unpacked.len() + n].len() > MESSAGE_UNIT);
            }
            assert!(text.len() <= MESSAGE_UNIT, "{} bytes", text.len());
            let v: Value = serde_json::from_str(text).unwrap();
            let inner = v["frames"].as_array().unwrap();
            assert_eq!(inner.len(), *n);
            unpacked.extend(inner.iter().map(Value::to_string));
        }
        assert_eq!(unpacked, frames, "every frame, in order");
        assert_eq!(batch(&frames[..1], MESSAGE_UNIT), vec![(frames[0].clone(), 1)]);
        assert!(batch::<String>(&[], MESSAGE_UNIT).is_empty());
    }

    #[test]
    fn a_frame_too_big_to_wrap_goes_alone() {
        let small = json!({"type": "notification", "id": "a"}).to_string();
        let big = json!({"type": "notification", "id": "b", "body": "y".repeat(MESSAGE_UNIT)}).to_string();
        let messages = batch(&[small.clone(), big.clone(), small.clone()], MESSAGE_UNIT);
        let texts: Vec<&str> = messages.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, vec![small.as_str(), big.as_str(), small.as_str()]);
    }
}
