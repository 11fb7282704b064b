//! Shared files in S3, by presigned URL only: the browser PUTs and GETs the object itself, so a
//! file's bytes never pass through a Lambda (6 MB payload cap, billed time) and Herald makes no
//! S3 request at all — presigning is a local computation with the function's credentials, and
//! S3 authorizes the URL against the function's role when it is used.

use std::time::Duration;

use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};

/// The URL and the headers the client must send with it (they are part of the signature: a
/// PUT with another type or length is refused by S3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("cannot presign the {op} URL: {message}")]
    Presign { op: &'static str, message: String },
}

#[derive(Clone, Debug)]
pub struct Objects {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl Objects {
    /// Path-style addressing when the endpoint is overridden (the local stack, LocalStack): a
    /// bucket subdomain of `127.0.0.1` resolves nowhere. On AWS, the virtual-hosted default.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: String) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket,
        }
    }

    /// A PUT of exactly `size` bytes of `content_type` to `key`, valid for `ttl`.
    pub async fn presign_put(&self, key: &str, content_type: &str, size: u64, ttl: Duration) -> Result<Presigned, ObjectsError> {
        let err = |e: String| ObjectsError::Presign { op: "PUT", message: e };
        let config = PresigningConfig::expires_in(ttl).map_err(|e| err(e.to_string()))?;
        let size = i64::try_from(size).map_err(|e| err(e.to_string()))?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(size)
            .presigned(config)
            .await
            .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))?;
        Ok(presigned(&req))
    }

    /// A GET of `key`, answered as a download named `file_name` of `content_type`.
    pub async fn presign_get(&self, key: &str, file_name: &str, content_type: &str, ttl: Duration) -> Result<Presigned, ObjectsError> {
        let err = |e: String| ObjectsError::Presign { op: "GET", message: e };
        let config = PresigningConfig::expires_in(ttl).map_err(|e| err(e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            // `attachment`: a file opened from the bucket's origin is saved, never rendered
            // there as a page, whatever its bytes turn out to be.
            .response_content_disposition(content_disposition(file_name))
            .response_content_type(content_type)
            .presigned(config)
            .await
            .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))?;
        Ok(presigned(&req))
    }
}

/// The URL, and of the request's headers only those the signature covers: the SDK also adds a
/// trace header (from the Lambda's environment) that the client has no use for, and a browser
/// would have to get it past the bucket's CORS rules.
fn presigned(req: &PresignedRequest) -> Presigned {
    let url = req.uri().to_owned();
    let signed = signed_headers(&url);
    Presigned {
        headers: req
            .headers()
            .filter(|(k, _)| signed.iter().any(|s| s.eq_ignore_ascii_case(k)))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        method: req.method().to_owned(),
        url,
    }
}

/// `X-Amz-SignedHeaders` of a presigned URL (`content-length;content-type;host`).
fn signed_headers(url: &str) -> Vec<String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-SignedHeaders="))
        .map(|v| v.replace("%3B", ";").replace("%3b", ";"))
        .map(|v| v.split(';').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII fallback and the name
/// percent-encoded.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signed_headers_are_handed_out() {
        let url = "http://127.0.0.1:9/b/k?x-id=PutObject&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&X-Amz-Signature=ab";
        assert_eq!(signed_headers(url), ["content-length", "content-type", "host"]);
        assert!(signed_headers("http://127.0.0.1:9/b/k").is_empty());
    }

    #[test]
    fn downloads_are_attachments_with_a_safe_name() {
        assert_eq!(
            content_disposition("a \"b\".png"),
            "attachment; filename=\"a _b_.png\"; filename*=UTF-8''a%20%22b%22.png"
        );
        assert_eq!(
            content_disposition("été.txt"),
            "attachment; filename=\"_t_.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"
        );
    }
}
