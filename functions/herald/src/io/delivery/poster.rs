//! The API Gateway management API (`POST`/`DELETE {endpoint}/@connections/{id}`), called as
//! SigV4-signed HTTP requests over one pooled HTTP client.
//!
//! Why not `aws-sdk-apigatewaymanagement`: a fan-out is thousands of identical, tiny requests, and
//! the SDK's per-request machinery (orchestrator, interceptors, endpoint rules, retry
//! classifiers, response deserializers) cost more CPU than the request itself — the fan-out
//! benchmark measured the SDK loop at 65–80 % of a plain HTTP loop's rate on the same endpoint
//! (`bench/RESULTS.md`). The API has two operations Herald uses, no pagination and a four-way
//! outcome, so signing with `aws-sigv4` (the signer the SDK itself uses, same settings) and
//! mapping status codes here is little code. The local stack verifies every signature, so the
//! end-to-end tests check this signer on every post.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use tokio::sync::RwLock;

/// The outcome of one management API call; each has exactly one consequence in the callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    Delivered,
    /// 410: the connection is gone; remove it now.
    Gone,
    /// 429, 5xx, timeouts, resets: worth another attempt later.
    Retryable(String),
    /// 403, 413 and other 4xx: another attempt would fail the same way.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PosterError {
    #[error("no AWS credentials provider is configured; @connections calls must be SigV4-signed")]
    NoCredentials,
    #[error("no AWS region is configured; @connections calls are signed for a region")]
    NoRegion,
    #[error("building the HTTP client for the management API: {0}")]
    Client(#[source] reqwest::Error),
    #[error("TLS for the management API: {0}")]
    Tls(#[source] Arc<crate::domain::tls::TlsError>),
}

/// Signing service name of the management API.
const SERVICE: &str = "execute-api";
/// Refresh expiring credentials this long before they expire, so no request is signed with
/// credentials that expire while it is in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Posts frames to connections; one client (one connection pool) per process, cheap to clone.
#[derive(Clone, Debug)]
pub struct Poster {
    http: reqwest::Client,
    endpoint: Arc<str>,
    region: Arc<str>,
    credentials: Arc<CredentialsCache>,
    /// Set when posts to connections that take batch frames are aggregated (`outbox`).
    outbox: Option<Arc<super::outbox::Outbox>>,
}

impl Poster {
    /// `endpoint` is `https://{api}.execute-api.{region}.amazonaws.com/{stage}` (no trailing `/`).
    pub fn new(sdk: &SdkConfig, endpoint: &str) -> Result<Self, PosterError> {
        let provider = sdk.credentials_provider().ok_or(PosterError::NoCredentials)?;
        let region = sdk.region().ok_or(PosterError::NoRegion)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::domain::tls::client_config().map_err(PosterError::Tls)?)
            // Bounded so that a post, one more post and a close all end within the horizon's
            // lag of the frame's cursor (see `horizon` and `delivery::post_or_close`).
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(PosterError::Client)?;
        Ok(Self {
            http,
            endpoint: Arc::from(endpoint.trim_end_matches('/')),
            region: Arc::from(region.as_ref()),
            credentials: Arc::new(CredentialsCache {
                provider,
                current: RwLock::new(None),
            }),
            outbox: None,
        })
    }

    /// Aggregates live posts to connections that take batch frames over `window` (zero: off).
    pub fn aggregating(mut self, window: Duration) -> Self {
        self.outbox = (!window.is_zero()).then(|| super::outbox::Outbox::new(window));
        self
    }

    /// Posts a live frame to a connection: aggregated with the other frames for it within the
    /// window when the connection takes batch frames and aggregation is on.
    pub async fn post_live(&self, connection_id: &str, frame: &str, takes_batches: bool) -> PostOutcome {
        match &self.outbox {
            Some(outbox) if takes_batches => outbox.post(self, connection_id, frame).await,
            _ => self.post(connection_id, frame).await,
        }
    }

    pub async fn post(&self, connection_id: &str, frame: &str) -> PostOutcome {
        self.call(reqwest::Method::POST, connection_id, frame.as_bytes()).await
    }

    /// Closes a connection from the server side (e.g. after the token was revoked).
    pub async fn disconnect(&self, connection_id: &str) -> PostOutcome {
        self.call(reqwest::Method::DELETE, connection_id, b"").await
    }

    async fn call(&self, method: reqwest::Method, connection_id: &str, body: &[u8]) -> PostOutcome {
        let url = connection_url(&self.endpoint, connection_id);
        let credentials = match self.credentials.get().await {
            Ok(c) => c,
            // Credential providers fail transiently (IMDS, container endpoint): retry later.
            Err(e) => return PostOutcome::Retryable(format!("resolving AWS credentials: {e}")),
        };
        let headers = match sign_headers(method.as_str(), &url, body, &credentials, &self.region, SystemTime::now()) {
            Ok(h) => h,
            Err(e) => return PostOutcome::Failed(format!("signing the request: {e}")),
        };
        let mut request = self.http.request(method, url).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => outcome(response).await,
            // Connect errors, resets and timeouts: transient by assumption.
            Err(e) => PostOutcome::Retryable(error_chain(&e)),
        }
    }
}

/// Maps a management API response to its outcome.
async fn outcome(response: reqwest::Response) -> PostOutcome {
    let status = response.status();
    if status.is_success() {
        return PostOutcome::Delivered;
    }
    match status.as_u16() {
        410 => PostOutcome::Gone,
        429 => PostOutcome::Retryable("throttled (429)".into()),
        s if (400..500).contains(&s) => PostOutcome::Failed(describe(response).await),
        _ => PostOutcome::Retryable(describe(response).await),
    }
}

/// "403 ForbiddenException: Forbidden": status, the error type API Gateway names in
/// `x-amzn-ErrorType`, and the body's message.
async fn describe(response: reqwest::Response) -> String {
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_owned());
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or(body);
    match kind {
        Some(kind) => format!("{status} {kind}: {message}"),
        None => format!("{status}: {message}"),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `{endpoint}/@connections/{id}` with the id percent-encoded as a path label (API Gateway's
/// ids end in `=`), the way the SDK encodes `{ConnectionId}`.
fn connection_url(endpoint: &str, connection_id: &str) -> String {
    let mut url = String::with_capacity(endpoint.len() + 14 + connection_id.len() * 3);
    url.push_str(endpoint);
    url.push_str("/@connections/");
    for b in connection_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// The SigV4 headers (`authorization`, `x-amz-date`, and `x-amz-security-token` for temporary
/// credentials) for one request, with the SDK's default settings for `execute-api`.
fn sign_headers(
    method: &str,
    url: &str,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, crate::BoxError> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let signable = SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(body))?;
    let (instructions, _signature) = sign(signable, &params)?.into_parts();
    let (headers, _params) = instructions.into_parts();
    Ok(headers.into_iter().map(|h| (h.name(), h.value().to_owned())).collect())
}

/// Credentials resolved once and reused until shortly before they expire. Lambda's come from
/// the environment and carry no expiry; container and instance credentials rotate. (The SDK
/// clients do the same through their identity cache, which only they can use.)
struct CredentialsCache {
    provider: SharedCredentialsProvider,
    current: RwLock<Option<Credentials>>,
}

impl std::fmt::Debug for CredentialsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsCache").finish_non_exhaustive()
    }
}

impl CredentialsCache {
    async fn get(&self) -> Result<Credentials, aws_credential_types::provider::error::CredentialsError> {
        if let Some(c) = self.current.read().await.as_ref().filter(|c| fresh(c, SystemTime::now())) {
            return Ok(c.clone());
        }
        // One refresh at a time: concurrent posts wait for it instead of each calling the provider.
        let mut slot = self.current.write().await;
        if let Some(c) = slot.as_ref().filter(|c| fresh(c, SystemTime::now())) {
            return Ok(c.clone());
        }
        let fetched = self.provider.provide_credentials().await?;
        *slot = Some(fetched.clone());
        Ok(fetched)
    }
}

fn fresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials.expiry().is_none_or(|expiry| expiry > now + REFRESH_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_encoded_as_path_labels() {
        assert_eq!(
            connection_url("https://a.example/prod", "L0SM9cOFvHcCIhw="),
            "https://a.example/prod/@connections/L0SM9cOFvHcCIhw%3D"
        );
        assert_eq!(connection_url("http://h", "a/b c+é"), "http://h/@connections/a%2Fb%20c%2B%C3%A9");
    }

    /// Reference values computed by botocore's `SigV4Auth` (an independent implementation) for
    /// the same request, credentials and time:
    /// `AWSRequest("POST", url, data=b'{"type":"ping"}')`, `Credentials("AKIDEXAMPLE",
    /// "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)`, `SigV4Auth(creds, "execute-api",
    /// "eu-west-1")` at 2026-11-23T10:00:00Z.
    #[test]
    fn signatures_match_an_independent_implementation() {
        let url = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/@connections/L0SM9cOFvHcCIhw%3D";
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000);
        let body = br#"{"type":"ping"}"#;
        let plain = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "test");
        let headers = sign_headers("POST", url, body, &plain, "eu-west-1", time).unwrap();
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20261123T100000Z"));
        assert_eq!(get("x-amz-security-token"), None);
        assert_eq!(get("authorization"), Some(SIGNED_PLAIN));

        let session = Credentials::new(
            "ASIAEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        );
        let headers = sign_headers("DELETE", url, b"", &session, "eu-west-1", time).unwrap();
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-security-token"), Some("session-token"));
        assert_eq!(get("authorization"), Some(SIGNED_SESSION));
    }

    const SIGNED_PLAIN: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/eu-west-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=ca9890fe97a31ed609dde08a87e4761e10a1ac158c942ac84e8523ce827c015e";
    const SIGNED_SESSION: &str = "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261123/eu-west-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=7826e60e8b36862bb4597b06bc43d62ed019fe6db063bbc5684caa7f6254232a";

    #[test]
    fn credentials_are_refreshed_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let with_expiry = |secs| Credentials::new("a", "b", None, Some(now + Duration::from_secs(secs)), "test");
        assert!(fresh(&Credentials::new("a", "b", None, None, "env"), now));
        assert!(fresh(&with_expiry(3600), now));
        assert!(!fresh(&with_expiry(299), now));
        assert!(!fresh(&with_expiry(0), now));
    }
}
