//! Reading a request: its body (capped, UTF-8, a JSON object), paging limits and path segments.

use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::Value;

use super::{ApiError, MAX_BODY_BYTES};

/// A `limit` query parameter: `default` when absent, else a number in `1..=max`.
pub(super) fn page_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={max}"))),
    }
}

pub(super) fn body_text(req: &Request) -> Result<&str, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
        ));
    }
    std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("body is not UTF-8"))
}

pub(super) fn json_body(req: &Request) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_str(body_text(req)?).map_err(|_| ApiError::bad_request("body is not JSON"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::bad_request("body must be a JSON object"))
    }
}

/// Decodes `%XX` escapes in a path segment (`course%3A42`). `None` on a malformed escape.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_path_segments() {
        assert_eq!(percent_decode("course%3A42").as_deref(), Some("course:42"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
