//! Inbox rules (issue #33): what a caller may mark read. No I/O: `services::inbox` writes the
//! marks and tells the user's other devices.

use serde_json::Value;

use crate::domain::cursor::Cursor;

/// How far past the clock an `upTo` cursor may be (clock skew between Lambda instances).
pub const UP_TO_SKEW_MS: u64 = 30_000;
/// Ids one read marks at most, as one `ack` frame.
pub const MAX_READ_IDS: usize = 100;
/// The longest notification id a read names.
const MAX_ID_LEN: usize = 128;

/// Why a read was refused; the message is what the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("ids must hold 1..=100 notification ids")]
    Ids,
    #[error("upTo is not a valid cursor")]
    NotACursor,
    #[error("upTo is in the future; pass a cursor Herald handed out")]
    Future,
    #[error("give ids or upTo")]
    Nothing,
}

/// An `upTo` a client sends: a cursor, and not past the clock (`now_ms`). A cursor past it
/// would mark read what does not exist yet (and so silence its escalation); Herald hands out
/// none beyond now, and the skew covers Lambda clocks.
pub fn up_to(raw: &str, now_ms: u64) -> Result<Cursor, ReadError> {
    let cursor = raw.parse::<Cursor>().map_err(|_| ReadError::NotACursor)?;
    if cursor.millis() > now_ms + UP_TO_SKEW_MS {
        return Err(ReadError::Future);
    }
    Ok(cursor)
}

/// `POST /notifications/read`: `{"ids":[...]}`, `{"upTo":CURSOR}` or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRead {
    pub ids: Option<Vec<String>>,
    pub up_to: Option<Cursor>,
}

impl MarkRead {
    /// Checks the whole body before anything is written, so a refused read changes nothing.
    pub fn parse(body: &Value, now_ms: u64) -> Result<Self, ReadError> {
        let ids = match body.get("ids") {
            None => None,
            Some(ids) => Some(
                ids.as_array()
                    .filter(|a| !a.is_empty() && a.len() <= MAX_READ_IDS)
                    .and_then(|a| {
                        a.iter()
                            .map(|i| i.as_str().filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN).map(str::to_owned))
                            .collect()
                    })
                    .ok_or(ReadError::Ids)?,
            ),
        };
        let up_to = match body.get("upTo") {
            None => None,
            Some(v) => Some(up_to(v.as_str().ok_or(ReadError::NotACursor)?, now_ms)?),
        };
        if ids.is_none() && up_to.is_none() {
            return Err(ReadError::Nothing);
        }
        Ok(Self { ids, up_to })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_read_names_ids_or_a_cursor() {
        let c = Cursor::at_millis(NOW - 1000);
        let r = MarkRead::parse(&json!({"ids": ["n1", "n2"], "upTo": c.to_string()}), NOW).unwrap();
        assert_eq!(r.ids, Some(vec!["n1".to_owned(), "n2".to_owned()]));
        assert_eq!(r.up_to, Some(c));
        assert_eq!(MarkRead::parse(&json!({}), NOW), Err(ReadError::Nothing));
        for ids in [json!([]), json!("n1"), json!([""]), json!([1]), json!(["x".repeat(129)])] {
            assert_eq!(MarkRead::parse(&json!({"ids": ids}), NOW), Err(ReadError::Ids), "{ids}");
        }
        let many: Vec<String> = (0..=MAX_READ_IDS).map(|i| format!("n{i}")).collect();
        assert_eq!(MarkRead::parse(&json!({"ids": many}), NOW), Err(ReadError::Ids));
        // The ids are checked first: a bad list is reported even beside a bad cursor.
        assert_eq!(MarkRead::parse(&json!({"ids": [], "upTo": 7}), NOW), Err(ReadError::Ids));
    }

    #[test]
    fn up_to_is_a_cursor_not_past_the_clock() {
        assert_eq!(MarkRead::parse(&json!({"upTo": 7}), NOW), Err(ReadError::NotACursor));
        assert_eq!(up_to("nope", NOW), Err(ReadError::NotACursor));
        let skewed = Cursor::at_millis(NOW + UP_TO_SKEW_MS);
        assert_eq!(up_to(&skewed.to_string(), NOW), Ok(skewed));
        let ahead = Cursor::at_millis(NOW + UP_TO_SKEW_MS + 1);
        assert_eq!(up_to(&ahead.to_string(), NOW), Err(ReadError::Future));
        assert_eq!(
            ReadError::Future.to_string(),
            "upTo is in the future; pass a cursor Herald handed out"
        );
    }
}
