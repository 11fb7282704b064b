//! Chat rules and formats (issue #32): room history paging, read receipts and shared files.
//! No I/O: `services::chat` does the reading and writing.

use serde_json::{Map, Value};

pub use crate::domain::config::UploadLimits;
use crate::domain::cursor::Cursor;
use crate::domain::frames;
use crate::domain::groups::{Group, valid_id};

/// A history page holds at most this many entries (`limit`), and this many when none is given.
pub const HISTORY_MAX: usize = 100;
pub const HISTORY_DEFAULT: usize = 50;

/// How often at most one member's receipts in one group are pushed to the others.
pub const RECEIPT_WINDOW_MS: u64 = 1_000;

/// The prefix of a history page token: `next` is not a cursor (a client must not take it for a
/// resume point), though it names one.
const HISTORY_TOKEN: &str = "h1.";

/// Where a history page ends: before a cursor the client holds (a message's), or before the
/// `next` of the previous page.
pub fn parse_before(raw: Option<&str>) -> Result<Option<Cursor>, BeforeError> {
    // An empty `before` is refused, not read as "none": the API documents it as a cursor.
    match raw {
        None => Ok(None),
        Some(s) => s
            .strip_prefix(HISTORY_TOKEN)
            .unwrap_or(s)
            .parse::<Cursor>()
            .map(Some)
            .map_err(|_| BeforeError),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("before must be a cursor or the `next` of a previous history page")]
pub struct BeforeError;

/// The `next` of a history page that read back to `position` (exclusive on the next page).
pub fn history_token(position: Cursor) -> String {
    format!("{HISTORY_TOKEN}{position}")
}

/// `{"type":"receipt","group":"room:7","user":"u1","upTo":"CURSOR"}`
pub fn receipt_frame(group: &Group, user: &str, up_to: Cursor) -> String {
    let mut m = Map::new();
    m.insert("group".into(), Value::String(group.to_string()));
    m.insert("user".into(), Value::String(user.to_owned()));
    m.insert("upTo".into(), Value::String(up_to.to_string()));
    frames::reply("receipt", m, None)
}

/// `POST /uploads`, checked: what the presigned PUT will be signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    pub group: Group,
    /// The file name as the user gave it (shown to the other members), at most 255 bytes.
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    BadRequest(String),
    #[error("size {size} is over the upload limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("content type {0:?} is not accepted for uploads")]
    RefusedType(String),
}

const UPLOAD_FIELDS: &[&str] = &["group", "name", "contentType", "size"];

impl UploadRequest {
    /// Parses and checks a `POST /uploads` body: every field, then the limits, so that a
    /// refusal says what to fix and no URL is made for a file that may not be stored.
    pub fn parse(body: &Value, limits: &UploadLimits) -> Result<Self, UploadError> {
        let bad = |m: &str| UploadError::BadRequest(m.to_owned());
        let obj = body.as_object().ok_or_else(|| bad("body must be a JSON object"))?;
        if let Some(k) = obj.keys().find(|k| !UPLOAD_FIELDS.contains(&k.as_str())) {
            return Err(UploadError::BadRequest(format!(
                "{:?} is not a field of an upload",
                truncate(k, 32)
            )));
        }
        let group = obj
            .get("group")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("group must be a string"))
            .and_then(|g| Group::parse(g).map_err(|e| UploadError::BadRequest(e.to_string())))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("name must be a string"))?;
        if name.trim().is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(bad("name must be 1..=255 bytes without control characters"));
        }
        let content_type = obj
            .get("contentType")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("contentType must be a string"))?
            .trim()
            .to_ascii_lowercase();
        let size = obj
            .get("size")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .ok_or_else(|| bad("size must be a positive whole number of bytes"))?;
        if size > limits.max_bytes {
            return Err(UploadError::TooLarge {
                size,
                max: limits.max_bytes,
            });
        }
        if !limits.content_types.contains(&content_type) {
            return Err(UploadError::RefusedType(truncate(&content_type, 100).to_owned()));
        }
        Ok(Self {
            group,
            name: name.to_owned(),
            content_type,
            size,
        })
    }
}

/// The object key of an upload: `{tenant}/{user}/{id}-{safe name}`. Under the uploader's tenant
/// and user, so a key says whose it is; `id` (a fresh ULID) makes it unguessable and unique.
pub fn upload_key(tenant: &str, user: &str, id: &str, name: &str) -> String {
    format!("{tenant}/{user}/{id}-{}", safe_name(name))
}

/// A file name reduced to `[A-Za-z0-9._-]`, at most 64 characters (the original name is kept
/// in the upload's record and given back as the download's file name).
pub fn safe_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if safe.trim_matches(['.', '_']).is_empty() {
        "file".into()
    } else {
        safe
    }
}

/// The tenant of a well-formed upload key, or `None` when the key cannot be one.
pub fn key_tenant(key: &str) -> Option<&str> {
    if key.len() > 400 {
        return None;
    }
    let mut parts = key.split('/');
    let (Some(tenant), Some(user), Some(file), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    (valid_id(tenant, 64) && valid_id(user, 128) && valid_id(file, 100)).then_some(tenant)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> UploadLimits {
        UploadLimits {
            max_bytes: 1000,
            content_types: vec!["image/png".into(), "text/plain".into()],
        }
    }

    #[test]
    fn before_takes_a_cursor_or_a_history_token() {
        let c = Cursor::from_parts(1_800_000_000_000, 7);
        assert_eq!(parse_before(None), Ok(None));
        assert_eq!(parse_before(Some("")), Err(BeforeError));
        assert_eq!(parse_before(Some(&c.to_string())), Ok(Some(c)));
        assert_eq!(parse_before(Some(&history_token(c))), Ok(Some(c)));
        assert_eq!(parse_before(Some("h1.nope")), Err(BeforeError));
        assert_eq!(parse_before(Some("p2.x")), Err(BeforeError));
    }

    #[test]
    fn uploads_are_checked_before_any_url_is_made() {
        let ok = json!({"group": "room:7", "name": "cat picture.png", "contentType": "Image/PNG", "size": 999});
        let r = UploadRequest::parse(&ok, &limits()).unwrap();
        assert_eq!((r.content_type.as_str(), r.size), ("image/png", 999));
        let over = json!({"group": "room:7", "name": "a.png", "contentType": "image/png", "size": 1001});
        assert_eq!(
            UploadRequest::parse(&over, &limits()),
            Err(UploadError::TooLarge { size: 1001, max: 1000 })
        );
        let exe = json!({"group": "room:7", "name": "a.exe", "contentType": "application/x-msdownload", "size": 10});
        assert!(matches!(UploadRequest::parse(&exe, &limits()), Err(UploadError::RefusedType(_))));
        for bad in [
            json!({"group": "room:7", "name": "a", "contentType": "image/png", "size": 0}),
            json!({"group": "room:7", "name": "a", "contentType": "image/png", "size": -1}),
            json!({"group": "room:7", "name": "a", "contentType": "image/png", "size": "9"}),
            json!({"group": "room 7", "name": "a", "contentType": "image/png", "size": 9}),
            json!({"group": "room:7", "name": "", "contentType": "image/png", "size": 9}),
            json!({"group": "room:7", "name": "a\nb", "contentType": "image/png", "size": 9}),
            json!({"group": "room:7", "name": "a", "contentType": "image/png", "size": 9, "acl": "public-read"}),
            json!([1]),
        ] {
            assert!(
                matches!(UploadRequest::parse(&bad, &limits()), Err(UploadError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_live_under_tenant_and_user() {
        let key = upload_key("acme", "u1", "01JD0000000000000000000000", "../../etc/pass wd");
        assert_eq!(key, "acme/u1/01JD0000000000000000000000-.._.._etc_pass_wd");
        assert_eq!(key_tenant(&key), Some("acme"));
        assert_eq!(safe_name("..."), "file");
        assert_eq!(key_tenant("acme/u1"), None);
        assert_eq!(key_tenant("acme/u1/x/y"), None);
        assert_eq!(key_tenant("ac#me/u1/x"), None);
    }

    #[test]
    fn receipts_are_shaped_as_documented() {
        let c = Cursor::from_parts(1_800_000_000_000, 7);
        let v: Value = serde_json::from_str(&receipt_frame(&Group::parse("room:7").unwrap(), "u1", c)).unwrap();
        assert_eq!(
            v,
            json!({"type": "receipt", "group": "room:7", "user": "u1", "upTo": c.to_string()})
        );
    }
}
