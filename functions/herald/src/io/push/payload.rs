//! What a push carries: the notification frame a connected client would have received, cut to
//! fit one 4 KB push message (`data` goes first, then the body is shortened, then link and body
//! go), and the `Topic` header for a latest-value stream. Pure.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use super::ece::MAX_PLAINTEXT;
use crate::domain::notification::LogEntry;

/// The longest `Topic` header value (RFC 8030 §5.4: at most 32 base64url characters).
pub const MAX_TOPIC: usize = 32;

/// The frame of `entry` as push payload, at most [`MAX_PLAINTEXT`] bytes. `id`, `topic`, `event`
/// and `title` always stay. No `cursor`: a push reaches a client that was not connected, and a
/// cursor it kept from one would be a resume point past what it missed meanwhile.
pub fn payload(entry: &LogEntry) -> String {
    let frame = entry.frame_without_cursor(false);
    if frame.len() <= MAX_PLAINTEXT {
        return frame;
    }
    let mut e = entry.clone();
    e.content.data = None;
    let frame = e.frame_without_cursor(false);
    if frame.len() <= MAX_PLAINTEXT {
        return frame;
    }
    if let Some(body) = e.content.body.take() {
        // What the rest takes with an empty body, then as much of the body as fits (escaping can
        // grow it, so shorten until it fits).
        e.content.body = Some(String::new());
        let room = MAX_PLAINTEXT.saturating_sub(e.frame_without_cursor(false).len());
        let mut cut = floor_char_boundary(&body, room);
        loop {
            e.content.body = Some(body[..cut].to_owned());
            let frame = e.frame_without_cursor(false);
            if frame.len() <= MAX_PLAINTEXT {
                return frame;
            }
            if cut == 0 {
                break;
            }
            cut = floor_char_boundary(&body, cut.saturating_sub(64));
        }
        e.content.body = None;
    }
    e.content.link = None;
    e.frame_without_cursor(false)
}

/// The `Topic` header for a collapse key: the key itself when it is already short base64url,
/// otherwise a digest of it (24 bytes of SHA-256, 32 characters).
pub fn topic(collapse: &str) -> String {
    let url_safe = collapse.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if url_safe && !collapse.is_empty() && collapse.len() <= MAX_TOPIC {
        return collapse.to_owned();
    }
    B64.encode(&digest::digest(&digest::SHA256, collapse.as_bytes()).as_ref()[..24])
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cursor::Cursor;
    use crate::domain::notification::Content;

    fn entry(body: &str, data: Option<serde_json::Value>) -> LogEntry {
        LogEntry {
            id: "n1".into(),
            cursor: Cursor::MIN,
            topic: "user:u1".into(),
            content: Content {
                event: "grade.posted".into(),
                title: Some("Grade".into()),
                body: Some(body.into()),
                link: Some("/g/1".into()),
                data,
                ..Content::default()
            },
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_small_frame_is_the_socket_frame_without_its_cursor() {
        let e = entry("hi", Some(serde_json::json!({"k": 1})));
        assert_eq!(payload(&e), e.frame_without_cursor(false));
        let v: serde_json::Value = serde_json::from_str(&payload(&e)).unwrap();
        assert_eq!(v.get("cursor"), None);
        assert_eq!(v["id"], e.id.as_str());
    }

    #[test]
    fn data_goes_first_then_the_body_is_cut() {
        let e = entry("short", Some(serde_json::json!({"blob": "x".repeat(5000)})));
        let p: serde_json::Value = serde_json::from_str(&payload(&e)).unwrap();
        assert!(p.get("data").is_none());
        assert_eq!(
            (p["id"].as_str(), p["title"].as_str(), p["body"].as_str(), p["link"].as_str()),
            (Some("n1"), Some("Grade"), Some("short"), Some("/g/1"))
        );

        let e = entry(&"é\"".repeat(3000), None);
        let text = payload(&e);
        assert!(text.len() <= MAX_PLAINTEXT, "{}", text.len());
        let p: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(p["body"].as_str().unwrap().len() > 1000);
        assert_eq!(p["link"], "/g/1");
    }

    #[test]
    fn topics_are_short_url_safe_base64() {
        assert_eq!(topic("score"), "score");
        let long = topic("match:42:score with spaces");
        assert_eq!(long.len(), 32);
        assert!(long.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(long, topic("match:42:score with spaces"));
        assert_ne!(topic(&"a".repeat(33)), "a".repeat(33));
    }
}
