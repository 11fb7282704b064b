//! A browser's `PushSubscription` as clients send it (`PUT /push/subscriptions`), validated
//! before anything is stored: an `https://` endpoint on a web push service's host (or the one
//! insecure origin configured for the local stack's emulator), `keys.p256dh` an uncompressed
//! P-256 point, `keys.auth` 16 bytes. Pure.

use aws_lc_rs::agreement::{ECDH_P256, ParsedPublicKey, UnparsedPublicKey};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ece::{AUTH_LEN, PUBLIC_KEY_LEN};

/// The largest subscription body accepted (a real one is about 400 bytes).
pub const MAX_SUBSCRIPTION_BYTES: usize = 4096;
/// The longest endpoint URL accepted.
pub const MAX_ENDPOINT_BYTES: usize = 2048;
/// How long a stored subscription lives without being sent again (clients re-send it when they
/// start); an earlier `expirationTime` of the browser wins.
pub const SUBSCRIPTION_DAYS: i64 = 90;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub endpoint: String,
    /// base64url, no padding.
    pub p256dh: String,
    /// base64url, no padding.
    pub auth: String,
    /// The browser's `expirationTime` (epoch ms), if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

impl Subscription {
    /// The raw keys (validated on the way in; a stored item that no longer decodes is an error).
    pub fn keys(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        Some((B64.decode(&self.p256dh).ok()?, B64.decode(&self.auth).ok()?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("the subscription is {0} bytes; at most {MAX_SUBSCRIPTION_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the body must be a JSON object: {0}")]
    NotJson(String),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("endpoint must be an https:// URL of at most {MAX_ENDPOINT_BYTES} bytes")]
    Endpoint,
    #[error("endpoint must be on a web push service's host (HERALD_PUSH_HOSTS), with no IP address, port or user info")]
    EndpointHost,
    #[error("keys.p256dh must be base64url of a 65-byte uncompressed P-256 public key")]
    P256dh,
    #[error("keys.auth must be base64url of 16 bytes")]
    Auth,
    #[error("expirationTime must be null or a number of milliseconds since the epoch")]
    Expiration,
}

pub use crate::domain::config::DEFAULT_PUSH_HOSTS;

/// Where push endpoints may point. An endpoint is a URL the client chooses and Herald POSTs to
/// from inside the account, so anything but a known push service would make Herald a proxy into
/// its own network (SSRF: instance metadata, loopback, private addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Lower-case host names; `*.example.com` matches any subdomain of `example.com` (not itself).
    hosts: Vec<String>,
    /// An `http://` origin accepted besides the hosts (the local stack's push service), never set
    /// in AWS.
    insecure_origin: Option<String>,
}

impl Default for EndpointPolicy {
    fn default() -> Self {
        Self::new(DEFAULT_PUSH_HOSTS.iter().map(|h| (*h).to_owned()).collect(), None)
    }
}

/// The configured hosts and the local stack's insecure origin.
impl From<&crate::domain::config::PushSettings> for EndpointPolicy {
    fn from(settings: &crate::domain::config::PushSettings) -> Self {
        Self::new(settings.hosts.clone(), settings.insecure_origin.clone())
    }
}

impl EndpointPolicy {
    pub fn new(hosts: Vec<String>, insecure_origin: Option<String>) -> Self {
        let hosts = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        Self { hosts, insecure_origin }
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty()),
            None => host == pattern,
        })
    }

    /// Whether Herald may send to `raw` (checked again before each push: a subscription stored
    /// before the list was narrowed is not sent to).
    pub fn check(&self, raw: &str) -> Result<(), SubscriptionError> {
        let (url, insecure) = shape(raw, self.insecure_origin.as_deref())?;
        if insecure {
            return Ok(());
        }
        // A domain: the parser turns `0x7f.1`, `2130706433` and `[::1]` into IP hosts, and a
        // domain never ends in a numeric label. No port (443 is normalised away), and listed.
        let host = url.host_str().unwrap_or_default();
        let ip = host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
        if ip || url.port().is_some() || !self.allows_host(host) {
            return Err(SubscriptionError::EndpointHost);
        }
        Ok(())
    }
}

/// Parses and validates a subscription body against `policy`.
pub fn parse_subscription(body: &str, policy: &EndpointPolicy) -> Result<Subscription, SubscriptionError> {
    let obj = object(body)?;
    let endpoint = endpoint(&obj)?;
    policy.check(&endpoint)?;
    let keys = obj
        .get("keys")
        .and_then(Value::as_object)
        .ok_or(SubscriptionError::Missing("keys"))?;
    let p256dh = keys
        .get("p256dh")
        .and_then(Value::as_str)
        .ok_or(SubscriptionError::Missing("keys.p256dh"))?;
    let auth = keys
        .get("auth")
        .and_then(Value::as_str)
        .ok_or(SubscriptionError::Missing("keys.auth"))?;
    let point = decode(p256dh).ok_or(SubscriptionError::P256dh)?;
    // On the curve, uncompressed: aws-lc parses it as an ECDH peer key.
    if point.len() != PUBLIC_KEY_LEN || point[0] != 4 || ParsedPublicKey::try_from(UnparsedPublicKey::new(&ECDH_P256, &point)).is_err() {
        return Err(SubscriptionError::P256dh);
    }
    let secret = decode(auth).ok_or(SubscriptionError::Auth)?;
    if secret.len() != AUTH_LEN {
        return Err(SubscriptionError::Auth);
    }
    let expires_ms = match obj.get("expirationTime") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_f64().filter(|t| *t > 0.0).ok_or(SubscriptionError::Expiration)? as i64),
    };
    Ok(Subscription {
        endpoint,
        p256dh: B64.encode(point),
        auth: B64.encode(secret),
        expires_ms,
    })
}

/// The endpoint of a `DELETE /push/subscriptions` body. Not held to the host list: a
/// subscription stored before the list was narrowed can still be deleted.
pub fn parse_endpoint(body: &str, policy: &EndpointPolicy) -> Result<String, SubscriptionError> {
    let endpoint = endpoint(&object(body)?)?;
    shape(&endpoint, policy.insecure_origin.as_deref())?;
    Ok(endpoint)
}

/// The sort key a subscription is stored under: a digest of its endpoint (endpoints are long
/// and the key only needs to be unique per user).
pub fn endpoint_key(endpoint: &str) -> String {
    B64.encode(digest::digest(&digest::SHA256, endpoint.as_bytes()).as_ref())
}

fn object(body: &str) -> Result<serde_json::Map<String, Value>, SubscriptionError> {
    if body.len() > MAX_SUBSCRIPTION_BYTES {
        return Err(SubscriptionError::TooLarge(body.len()));
    }
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(SubscriptionError::NotJson("not an object".into())),
        Err(e) => Err(SubscriptionError::NotJson(e.to_string())),
    }
}

fn endpoint(obj: &serde_json::Map<String, Value>) -> Result<String, SubscriptionError> {
    obj.get("endpoint")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(SubscriptionError::Missing("endpoint"))
}

/// An `https://` URL (or one of the insecure origin: `true`) without user info, taken exactly as
/// written.
fn shape(raw: &str, insecure_origin: Option<&str>) -> Result<(reqwest::Url, bool), SubscriptionError> {
    // The URL parser forgives what a push service would not see the same way (surrounding
    // spaces, tabs inside, an upper-case scheme): the endpoint is taken exactly as written or
    // not at all.
    if raw.len() > MAX_ENDPOINT_BYTES || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SubscriptionError::Endpoint);
    }
    let url = reqwest::Url::parse(raw).map_err(|_| SubscriptionError::Endpoint)?;
    let secure = raw.starts_with("https://") && url.scheme() == "https" && url.host_str().is_some_and(|h| !h.is_empty());
    let allowed = insecure_origin.is_some_and(|o| {
        let o = o.trim_end_matches('/');
        raw.starts_with(&format!("{o}/")) && url.origin().ascii_serialization() == o
    });
    if !(secure || allowed) || !url.username().is_empty() || url.password().is_some() {
        return Err(SubscriptionError::Endpoint);
    }
    Ok((url, allowed && !secure))
}

fn decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    /// The default push services plus `p.example`, the host these tests use.
    fn policy() -> EndpointPolicy {
        let mut hosts: Vec<String> = DEFAULT_PUSH_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        hosts.push("p.example".into());
        EndpointPolicy::new(hosts, None)
    }

    fn sub(endpoint: &str, p256dh: &str, auth: &str) -> String {
        json!({"endpoint": endpoint, "expirationTime": null, "keys": {"p256dh": p256dh, "auth": auth}}).to_string()
    }

    #[test]
    fn accepts_a_browser_subscription() {
        let s = parse_subscription(&sub("https://fcm.googleapis.com/fcm/send/abc", P256DH, AUTH), &policy()).unwrap();
        assert_eq!((s.p256dh.as_str(), s.auth.as_str(), s.expires_ms), (P256DH, AUTH, None));
        // Padded base64url is what some libraries print; it is stored unpadded.
        let padded = parse_subscription(&sub("https://p.example/x", &format!("{P256DH}="), &format!("{AUTH}==")), &policy()).unwrap();
        assert_eq!(padded.auth, AUTH);
    }

    #[test]
    fn refuses_what_cannot_be_pushed_to() {
        let err = |body: &str| parse_subscription(body, &policy()).unwrap_err();
        assert_eq!(err(&sub("http://p.example/x", P256DH, AUTH)), SubscriptionError::Endpoint);
        assert_eq!(err(&sub("https://user:pw@p.example/x", P256DH, AUTH)), SubscriptionError::Endpoint);
        assert_eq!(err(&sub("not a url", P256DH, AUTH)), SubscriptionError::Endpoint);
        assert_eq!(err(&sub(" https://p.example/x", P256DH, AUTH)), SubscriptionError::Endpoint);
        assert_eq!(err(&sub("HTTPS://p.example/x", P256DH, AUTH)), SubscriptionError::Endpoint);
        assert_eq!(err(&sub("https://p.example/a\tb", P256DH, AUTH)), SubscriptionError::Endpoint);
        assert_eq!(err(&sub("https://p.example/x", &P256DH[..40], AUTH)), SubscriptionError::P256dh);
        // 65 bytes that are not a point on the curve.
        assert_eq!(
            err(&sub("https://p.example/x", &B64.encode([4u8; 65]), AUTH)),
            SubscriptionError::P256dh
        );
        assert_eq!(err(&sub("https://p.example/x", P256DH, "AAAA")), SubscriptionError::Auth);
        assert_eq!(err(&sub("https://p.example/x", P256DH, "!!")), SubscriptionError::Auth);
        assert_eq!(err(r#"{"endpoint":"https://p.example/x"}"#), SubscriptionError::Missing("keys"));
        assert_eq!(err("[]"), SubscriptionError::NotJson("not an object".into()));
        let big = sub(&format!("https://p.example/{}", "x".repeat(5000)), P256DH, AUTH);
        assert_eq!(err(&big), SubscriptionError::TooLarge(big.len()));
        let long = sub(&format!("https://p.example/{}", "x".repeat(2100)), P256DH, AUTH);
        assert_eq!(err(&long), SubscriptionError::Endpoint);
    }

    #[test]
    fn only_the_configured_insecure_origin_passes() {
        let local = EndpointPolicy::new(vec![], Some("http://127.0.0.1:4000".into()));
        assert!(parse_subscription(&sub("http://127.0.0.1:4000/_herald/push/send/1", P256DH, AUTH), &local).is_ok());
        assert!(parse_subscription(&sub("http://127.0.0.1:4001/_herald/push/send/1", P256DH, AUTH), &local).is_err());
        // The local origin is no licence for other loopback endpoints over https.
        assert_eq!(
            parse_subscription(&sub("https://127.0.0.1:4000/x", P256DH, AUTH), &local),
            Err(SubscriptionError::EndpointHost)
        );
        assert_eq!(
            parse_endpoint(r#"{"endpoint":"https://p.example/x"}"#, &policy()).unwrap(),
            "https://p.example/x"
        );
        assert_eq!(endpoint_key("https://p.example/x").len(), 43);
    }

    /// SSRF: an endpoint is a URL Herald POSTs to from inside the account.
    #[test]
    fn only_push_service_hosts_pass() {
        let p = EndpointPolicy::default();
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/abc",
            "https://web.push.apple.com/QGx",
            "https://wns2-by3p.notify.windows.com/w/?token=abc",
            "https://FCM.googleapis.com/fcm/send/abc",
        ] {
            assert_eq!(p.check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://169.254.169.254/latest/meta-data/",
            "https://127.0.0.1:9/x",
            "https://10.0.0.1/x",
            "https://[::1]/x",
            "https://localhost/x",
            "https://0x7f.1/x",
            "https://2130706433/x",
            "https://fcm.googleapis.com:8443/x",
            "https://fcm.googleapis.com./x",
            "https://fcm.googleapis.com.evil.example/x",
            "https://evil-fcm.googleapis.com/x",
            "https://push.apple.com/x",
            "https://evilpush.apple.com/x",
            "https://p.example/x",
        ] {
            assert_eq!(p.check(bad), Err(SubscriptionError::EndpointHost), "{bad}");
        }
        assert_eq!(p.check("https://user@fcm.googleapis.com/x"), Err(SubscriptionError::Endpoint));
        assert_eq!(p.check("http://fcm.googleapis.com/x"), Err(SubscriptionError::Endpoint));
        // HERALD_PUSH_HOSTS replaces the list.
        let settings = crate::domain::config::PushSettings {
            hosts: vec!["*.push.apple.com".into()],
            ..Default::default()
        };
        let apple = EndpointPolicy::from(&settings);
        assert!(apple.check("https://web.push.apple.com/x").is_ok());
        assert!(apple.check("https://fcm.googleapis.com/x").is_err());
        // Deleting is not held to the list (a subscription stored before it was narrowed).
        assert!(parse_endpoint(r#"{"endpoint":"https://10.0.0.1/x"}"#, &p).is_ok());
    }
}
