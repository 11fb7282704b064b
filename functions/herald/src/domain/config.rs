//! Settings read once at init from the environment that `template.yaml` sets.
//!
//! Parsing takes a lookup function rather than reading `std::env` directly so that every rule
//! (names, bounds, defaults) is unit-tested without mutating the process environment.

use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("setting {name} is missing")]
    Missing { name: &'static str },
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where settings come from: the process environment in Lambda, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A non-empty value, or `None`. Empty strings count as unset because CloudFormation parameters
/// default to `""` when an optional feature is off.
pub fn optional(src: &dyn Source, name: &'static str) -> Option<String> {
    src.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub fn required(src: &dyn Source, name: &'static str) -> Result<String, ConfigError> {
    optional(src, name).ok_or(ConfigError::Missing { name })
}

/// A number within `min..=max`, or `default` when unset.
pub fn bounded<T>(src: &dyn Source, name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = optional(src, name) else {
        return Ok(default);
    };
    let value: T = raw.parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("{raw:?} is not a number"),
    })?;
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(value)
}

/// DynamoDB tables.
#[derive(Debug, Clone)]
pub struct Tables {
    pub connections: String,
    pub notifications: String,
}

impl Tables {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            connections: required(src, "HERALD_CONNECTIONS_TABLE")?,
            notifications: required(src, "HERALD_NOTIFICATIONS_TABLE")?,
        })
    }
}

/// SQS queues.
#[derive(Debug, Clone)]
pub struct Queues {
    /// Producers' messages (and Herald's own deferred ones).
    pub dispatch: String,
    pub dispatch_dlq: String,
    /// Herald's own messages (fan-out jobs, presence and escalation checks): never producer input.
    pub internal: String,
    pub retry: String,
    /// Unread notifications past their `escalate` deadline, for the operator's email/SMS worker.
    pub escalation: String,
}

impl Queues {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            dispatch: required(src, "HERALD_DISPATCH_QUEUE_URL")?,
            dispatch_dlq: required(src, "HERALD_DISPATCH_DLQ_URL")?,
            internal: required(src, "HERALD_INTERNAL_QUEUE_URL")?,
            retry: required(src, "HERALD_RETRY_QUEUE_URL")?,
            escalation: required(src, "HERALD_ESCALATION_QUEUE_URL")?,
        })
    }

    /// Whether an SQS record's `eventSourceARN` is the internal queue (`arn:…:{name}` against the
    /// URL's `…/{name}`).
    pub fn is_internal_source(&self, event_source_arn: &str) -> bool {
        let name = self.internal.rsplit('/').next().unwrap_or_default();
        !name.is_empty() && event_source_arn.rsplit(':').next() == Some(name)
    }
}

/// EventBridge Scheduler settings for long-delay reminders.
#[derive(Debug, Clone)]
pub struct Scheduling {
    pub group: String,
    pub role_arn: String,
    pub target_arn: String,
}

impl Scheduling {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            group: required(src, "HERALD_SCHEDULE_GROUP")?,
            role_arn: required(src, "HERALD_SCHEDULER_ROLE_ARN")?,
            target_arn: required(src, "HERALD_REMINDER_TARGET_ARN")?,
        })
    }
}

/// The hard cap of a notification frame: API Gateway's WebSocket frame limit.
pub const FRAME_HARD_CAP: usize = 32 * 1024;

/// Tunables with defaults; every one is bounded so a typo cannot take the system down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub payload_budget: usize,
    pub retention_seconds: u64,
    pub fanout_concurrency: usize,
    pub fanout_shard_size: usize,
    pub membership_shards: u16,
    pub retry_max_attempts: u32,
    /// Connections outlive API Gateway's 2-hour maximum by a margin, then TTL removes leftovers.
    pub connection_ttl_seconds: u64,
    /// How long a dispatch claim on a notification id (or a fan-out job) holds before another
    /// delivery of it may take it over. A live dispatch keeps its own message invisible (see
    /// `handlers::dispatch`), so only a copy from elsewhere (a producer's retry) or a redelivery
    /// after a crash meets the claim; above the function's timeout (the template's 90 s against
    /// 60 s), no copy can take over from a holder that is still alive.
    pub claim_lease_seconds: u64,
    /// How long an id is remembered for idempotency, whatever the notification's own TTL: it
    /// must outlive every way a message can come back (the dead-letter queues keep messages 14
    /// days, and a redrive from there must still be recognised as a duplicate).
    pub dedupe_seconds: u64,
    /// The shortest `escalate.afterSeconds` a producer may ask for: 60 s. Only a test stack
    /// lowers it, so its tests need not wait a minute.
    pub escalate_min_seconds: u64,
    /// Open connections one user may hold (`HERALD_MAX_CONNECTIONS_PER_USER`, default 20): each
    /// is a member of every topic the user reads, so each multiplies what one notification costs.
    pub max_connections_per_user: usize,
    /// Groups one connection may be a member of (`HERALD_MAX_GROUPS_PER_CONNECTION`, default
    /// 100, the automatic ones included): each is a row every fan-out of the group reads, and
    /// the connection item lists them all.
    pub max_groups_per_connection: usize,
    /// How long dispatch holds a live frame for a connection that takes batch frames, so that
    /// what else it sends the connection meanwhile goes in the same message
    /// (`HERALD_AGGREGATE_MS`, 0 = off; at most 1 s, well inside the horizon's lag, since a frame
    /// must reach its connections soon after its cursor).
    pub aggregate_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            payload_budget: 2048,
            retention_seconds: 7 * 24 * 3600,
            fanout_concurrency: 64,
            fanout_shard_size: 500,
            membership_shards: 4,
            retry_max_attempts: 5,
            connection_ttl_seconds: 2 * 3600 + 600,
            claim_lease_seconds: 60,
            dedupe_seconds: 15 * 24 * 3600,
            escalate_min_seconds: 60,
            max_connections_per_user: 20,
            max_groups_per_connection: 100,
            aggregate_ms: 50,
        }
    }
}

impl Limits {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            payload_budget: bounded(src, "HERALD_PAYLOAD_BUDGET_BYTES", d.payload_budget, 256, FRAME_HARD_CAP)?,
            retention_seconds: bounded(src, "HERALD_RETENTION_SECONDS", d.retention_seconds, 60, 366 * 24 * 3600)?,
            fanout_concurrency: bounded(src, "HERALD_FANOUT_CONCURRENCY", d.fanout_concurrency, 1, 1024)?,
            fanout_shard_size: bounded(src, "HERALD_FANOUT_SHARD_SIZE", d.fanout_shard_size, 10, 100_000)?,
            membership_shards: bounded(src, "HERALD_MEMBERSHIP_SHARDS", d.membership_shards, 1, 64)?,
            retry_max_attempts: bounded(src, "HERALD_RETRY_MAX_ATTEMPTS", d.retry_max_attempts, 1, 20)?,
            connection_ttl_seconds: d.connection_ttl_seconds,
            claim_lease_seconds: bounded(src, "HERALD_CLAIM_LEASE_SECONDS", d.claim_lease_seconds, 1, 900)?,
            dedupe_seconds: bounded(src, "HERALD_DEDUPE_SECONDS", d.dedupe_seconds, 3600, 400 * 24 * 3600)?,
            escalate_min_seconds: bounded(src, "HERALD_ESCALATE_MIN_SECONDS", d.escalate_min_seconds, 1, 60)?,
            max_connections_per_user: bounded(src, "HERALD_MAX_CONNECTIONS_PER_USER", d.max_connections_per_user, 1, 1000)?,
            max_groups_per_connection: bounded(src, "HERALD_MAX_GROUPS_PER_CONNECTION", d.max_groups_per_connection, 4, 1000)?,
            aggregate_ms: bounded(src, "HERALD_AGGREGATE_MS", d.aggregate_ms, 0, 1000)?,
        })
    }
}

/// Chat settings (issue #32): read receipts and file sharing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSettings {
    /// Groups with more live connections than this get no live receipt frames, and groups with
    /// more readers than this get counts from `GET /groups/{group}/receipts`
    /// (`HERALD_RECEIPT_MAX_MEMBERS`, default 50): each receipt is a post per member.
    pub receipt_max_members: usize,
    /// `None` while no bucket is configured (`HERALD_UPLOADS_BUCKET`): uploads are off.
    pub uploads: Option<Uploads>,
}

/// What the uploads of a deployment allow (`HERALD_UPLOAD_MAX_BYTES`,
/// `HERALD_UPLOAD_CONTENT_TYPES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    pub max_bytes: u64,
    /// Exact media types (`image/png`), lower case.
    pub content_types: Vec<String>,
}

/// Where shared files go and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploads {
    pub bucket: String,
    pub limits: UploadLimits,
    /// Days a shared file is kept (`HERALD_UPLOAD_EXPIRY_DAYS`, default 30): the bucket's
    /// lifecycle rule deletes the object, and its record expires with it.
    pub expiry_days: u32,
}

/// What uploads accept when `HERALD_UPLOAD_CONTENT_TYPES` is unset: pictures, PDF and plain
/// text. Never HTML or SVG, which a browser would run as a page of the bucket's origin.
pub const DEFAULT_UPLOAD_TYPES: &str = "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain";

/// Media types no setting can allow: a browser renders them as active content.
const ACTIVE_TYPES: &[&str] = &[
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/javascript",
    "application/javascript",
];

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            receipt_max_members: 50,
            uploads: None,
        }
    }
}

impl ChatSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let receipt_max_members = bounded(src, "HERALD_RECEIPT_MAX_MEMBERS", 50, 1, 1000)?;
        let Some(bucket) = optional(src, "HERALD_UPLOADS_BUCKET") else {
            return Ok(Self {
                receipt_max_members,
                uploads: None,
            });
        };
        let max_bytes = bounded(src, "HERALD_UPLOAD_MAX_BYTES", 10 * 1024 * 1024, 1, 5 * 1024 * 1024 * 1024)?;
        let types = optional(src, "HERALD_UPLOAD_CONTENT_TYPES").unwrap_or_else(|| DEFAULT_UPLOAD_TYPES.into());
        let mut content_types = Vec::new();
        for t in types.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()) {
            let shaped = t.split_once('/').is_some_and(|(a, b)| {
                let token = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c));
                token(a) && token(b)
            });
            if !shaped || ACTIVE_TYPES.contains(&t.as_str()) {
                return Err(ConfigError::Invalid {
                    name: "HERALD_UPLOAD_CONTENT_TYPES",
                    reason: format!("{t:?} is not an accepted media type (type/subtype; never HTML, SVG or scripts)"),
                });
            }
            content_types.push(t);
        }
        Ok(Self {
            receipt_max_members,
            uploads: Some(Uploads {
                bucket,
                limits: UploadLimits { max_bytes, content_types },
                expiry_days: bounded(src, "HERALD_UPLOAD_EXPIRY_DAYS", 30, 1, 3650)?,
            }),
        })
    }
}

/// The web push services Herald sends to when no `HERALD_PUSH_HOSTS` is configured: FCM
/// (Chrome, Edge, Android), Mozilla's autopush, Apple's and Windows' (WNS). `*.` is any subdomain.
pub const DEFAULT_PUSH_HOSTS: &[&str] = &[
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.services.mozilla.com",
    "*.push.apple.com",
    "*.notify.windows.com",
];

/// Web Push settings (docs/DESIGN.md "Reaching users who are not connected"). Push is off while
/// no VAPID key is configured.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PushSettings {
    /// base64url of the VAPID private scalar (a secret; only the functions that send pushes).
    pub vapid_private_key: Option<String>,
    /// base64url of the VAPID public key (uncompressed point), served to clients.
    pub vapid_public_key: Option<String>,
    /// The VAPID `sub` contact, `mailto:` or `https:` (required with the keys).
    pub vapid_subject: Option<String>,
    /// An `http://` origin whose push endpoints are accepted besides `https://` ones: the local
    /// stack's push service. Loopback only, so no setting can open plain-text pushes elsewhere.
    pub insecure_origin: Option<String>,
    /// The push services' hosts endpoints may point to (`HERALD_PUSH_HOSTS`, comma-separated;
    /// `*.example.com` is any subdomain); unset: [`DEFAULT_PUSH_HOSTS`].
    pub hosts: Vec<String>,
}

/// By hand: the VAPID private key is a secret, and settings end up in logs and panics.
impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSettings")
            .field("vapid_private_key", &self.vapid_private_key.as_ref().map(|_| "<redacted>"))
            .field("vapid_public_key", &self.vapid_public_key)
            .field("vapid_subject", &self.vapid_subject)
            .field("insecure_origin", &self.insecure_origin)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl PushSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let insecure_origin = optional(src, "HERALD_PUSH_INSECURE_ORIGIN");
        if let Some(o) = &insecure_origin
            && !(o.starts_with("http://127.0.0.1:") || o.starts_with("http://localhost:"))
        {
            return Err(ConfigError::Invalid {
                name: "HERALD_PUSH_INSECURE_ORIGIN",
                reason: "only a loopback http://127.0.0.1:PORT or http://localhost:PORT origin (the local stack's)".into(),
            });
        }
        let mut hosts = Vec::new();
        for host in optional(src, "HERALD_PUSH_HOSTS").unwrap_or_default().split(',') {
            let host = host.trim().to_ascii_lowercase();
            if host.is_empty() {
                continue;
            }
            if !is_host_pattern(&host) {
                return Err(ConfigError::Invalid {
                    name: "HERALD_PUSH_HOSTS",
                    reason: format!("{host:?} is not a host name or *.domain (no IP addresses, ports or schemes)"),
                });
            }
            hosts.push(host);
        }
        if hosts.is_empty() {
            hosts = DEFAULT_PUSH_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        }
        Ok(Self {
            vapid_private_key: optional(src, "HERALD_VAPID_PRIVATE_KEY"),
            vapid_public_key: optional(src, "HERALD_VAPID_PUBLIC_KEY"),
            vapid_subject: optional(src, "HERALD_VAPID_SUBJECT"),
            insecure_origin,
            hosts,
        })
    }
}

/// `push.example.com` or `*.example.com`: two or more DNS labels, the last not numeric (so no
/// IPv4 address can be listed).
fn is_host_pattern(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-'))
        && labels.last().is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// The WebSocket management endpoint (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`).
pub fn ws_endpoint(src: &dyn Source) -> Result<String, ConfigError> {
    let url = required(src, "HERALD_WS_ENDPOINT")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ConfigError::Invalid {
            name: "HERALD_WS_ENDPOINT",
            reason: "must be an http(s) URL".into(),
        });
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    pub fn source(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn chat_settings_default_and_refuse_active_content() {
        let off = ChatSettings::from_source(&source(&[])).unwrap();
        assert_eq!((off.receipt_max_members, off.uploads), (50, None));
        let on = ChatSettings::from_source(&source(&[("HERALD_UPLOADS_BUCKET", "b"), ("HERALD_UPLOAD_MAX_BYTES", "2048")])).unwrap();
        let uploads = on.uploads.unwrap();
        assert_eq!((uploads.bucket.as_str(), uploads.limits.max_bytes), ("b", 2048));
        assert!(uploads.limits.content_types.contains(&"image/png".to_owned()));
        for bad in ["text/html", "image/svg+xml", "nonsense", "image/"] {
            let err =
                ChatSettings::from_source(&source(&[("HERALD_UPLOADS_BUCKET", "b"), ("HERALD_UPLOAD_CONTENT_TYPES", bad)])).unwrap_err();
            assert!(err.to_string().contains("HERALD_UPLOAD_CONTENT_TYPES"), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_required_setting_is_named() {
        let err = Tables::from_source(&source(&[("HERALD_CONNECTIONS_TABLE", "c")])).unwrap_err();
        assert_eq!(err.to_string(), "setting HERALD_NOTIFICATIONS_TABLE is missing");
    }

    #[test]
    fn limits_default_and_bounds() {
        assert_eq!(Limits::from_source(&source(&[])).unwrap(), Limits::default());
        let err = Limits::from_source(&source(&[("HERALD_PAYLOAD_BUDGET_BYTES", "40000")])).unwrap_err();
        assert!(err.to_string().contains("HERALD_PAYLOAD_BUDGET_BYTES"), "{err}");
        let err = Limits::from_source(&source(&[("HERALD_FANOUT_CONCURRENCY", "lots")])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "HERALD_FANOUT_CONCURRENCY",
                ..
            }
        ));
        let l = Limits::from_source(&source(&[("HERALD_FANOUT_SHARD_SIZE", "200")])).unwrap();
        assert_eq!(l.fanout_shard_size, 200);
    }

    #[test]
    fn empty_string_counts_as_unset() {
        assert_eq!(optional(&source(&[("X", "  ")]), "X"), None);
    }

    #[test]
    fn the_internal_queue_is_recognised_by_its_arn() {
        let q = Queues::from_source(&source(&[
            (
                "HERALD_DISPATCH_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/herald-DispatchQueue-A",
            ),
            (
                "HERALD_DISPATCH_DLQ_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/herald-DispatchDeadLetterQueue-B",
            ),
            (
                "HERALD_INTERNAL_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/herald-InternalQueue-C",
            ),
            (
                "HERALD_RETRY_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/herald-RetryQueue-D",
            ),
            (
                "HERALD_ESCALATION_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/1/herald-EscalationQueue-E",
            ),
        ]))
        .unwrap();
        assert!(q.is_internal_source("arn:aws:sqs:eu-west-1:1:herald-InternalQueue-C"));
        assert!(!q.is_internal_source("arn:aws:sqs:eu-west-1:1:herald-DispatchQueue-A"));
        assert!(!q.is_internal_source(""));
    }

    #[test]
    fn push_is_off_without_keys_and_plain_http_only_on_loopback() {
        let p = PushSettings::from_source(&source(&[])).unwrap();
        assert_eq!((p.vapid_private_key, p.insecure_origin), (None, None));
        let err = PushSettings::from_source(&source(&[("HERALD_PUSH_INSECURE_ORIGIN", "http://push.example.com")])).unwrap_err();
        assert!(err.to_string().contains("HERALD_PUSH_INSECURE_ORIGIN"), "{err}");
        let p = PushSettings::from_source(&source(&[("HERALD_PUSH_INSECURE_ORIGIN", "http://127.0.0.1:4000")])).unwrap();
        assert_eq!(p.insecure_origin.as_deref(), Some("http://127.0.0.1:4000"));
    }

    #[test]
    fn push_hosts_are_host_names_or_subdomain_patterns() {
        let p = PushSettings::from_source(&source(&[("HERALD_PUSH_HOSTS", " FCM.googleapis.com, *.push.apple.com ,")])).unwrap();
        assert_eq!(p.hosts, ["fcm.googleapis.com", "*.push.apple.com"]);
        // Unset: the well-known services.
        let d = PushSettings::from_source(&source(&[])).unwrap();
        assert_eq!(d.hosts, DEFAULT_PUSH_HOSTS);
        for bad in [
            "10.0.0.1",
            "localhost",
            "https://fcm.googleapis.com",
            "fcm.googleapis.com:443",
            "*",
            "*.com.",
            "a..b",
        ] {
            let err = PushSettings::from_source(&source(&[("HERALD_PUSH_HOSTS", bad)])).unwrap_err();
            assert!(err.to_string().contains("HERALD_PUSH_HOSTS"), "{bad}: {err}");
        }
    }

    /// The settings are logged on init failures; the VAPID private key must never be.
    #[test]
    fn push_settings_debug_hides_the_private_key() {
        let p = PushSettings::from_source(&source(&[
            ("HERALD_VAPID_PRIVATE_KEY", "c2VjcmV0LXNjYWxhcg"),
            ("HERALD_VAPID_PUBLIC_KEY", "BPublic"),
        ]))
        .unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("c2VjcmV0LXNjYWxhcg"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("BPublic"), "{shown}");
    }

    #[test]
    fn endpoint_must_be_a_url() {
        assert!(ws_endpoint(&source(&[("HERALD_WS_ENDPOINT", "ftp://x")])).is_err());
        assert_eq!(
            ws_endpoint(&source(&[(
                "HERALD_WS_ENDPOINT",
                "https://a.execute-api.eu-west-1.amazonaws.com/prod/"
            )]))
            .unwrap(),
            "https://a.execute-api.eu-west-1.amazonaws.com/prod"
        );
    }
}
