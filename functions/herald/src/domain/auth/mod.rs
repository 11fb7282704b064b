//! JWT verification, shared by the WebSocket authorizer and the HTTP API.
//!
//! The rules that keep it safe: the accepted algorithms come from configuration, never from the
//! token; an RSA/EC token is checked only against a JWKS key of the same family selected by
//! `kid`; HS256 is checked only against the configured secret (so a token "signed" with the RSA
//! public key as an HMAC secret fails); `iss`, `aud`, `exp` and `sub` are required; `exp`/`nbf`
//! get 30 s of leeway; tokens over 8 KB are refused before any parsing.
//!
//! Keys fetched from a JWKS URL rotate: a token whose `kid` is unknown makes the verifier fetch
//! the set again (at most once per [`JWKS_REFETCH_INTERVAL`], so a flood of made-up kids cannot
//! hammer the identity provider), and a failed fetch keeps the keys it has. A JWKS outage at cold
//! start does not fail init: the verifier starts with no keys and fetches on the first token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use crate::domain::config::{ConfigError, Source, optional, required};
use crate::domain::groups::{valid_id, validate_tenant};

pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
pub const LEEWAY_SECONDS: u64 = 30;

/// Who is calling: what every authorization decision is based on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    pub user: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// Groups the token entitles the user to join (`groups` claim).
    pub groups: Vec<String>,
}

/// The roles Herald itself gives meaning to. Any other role in a token is the deployer's, for
/// the join policy (`HERALD_JOIN_ROLES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A backend service: publishes over HTTP and acts for any user of its tenant.
    Service,
    /// A tenant administrator: acts for any user of its tenant (reminders, subscriptions).
    Admin,
    /// May address every tenant at once (`"to": {"all": true}`).
    Platform,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Admin => "admin",
            Self::Platform => "platform",
        }
    }
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn has(&self, role: Role) -> bool {
        self.has_role(role.as_str())
    }

    /// Acts for others within its own tenant: the one rule behind every "service or admin" check.
    pub fn is_privileged(&self) -> bool {
        self.has(Role::Service) || self.has(Role::Admin)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token is larger than 8 KB")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("token key is unknown")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks the `{0}` claim")]
    MissingClaim(String),
    #[error("token claim `{0}` is invalid")]
    InvalidClaim(String),
}

/// JWT settings from the environment.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub tenant_claim: String,
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
    pub hs256_secret: Option<String>,
}

impl JwtConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let algs = optional(src, "HERALD_JWT_ALGORITHMS").unwrap_or_else(|| "RS256".into());
        let mut algorithms = Vec::new();
        for name in algs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let alg = match name {
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                "HS256" => Algorithm::HS256,
                other => {
                    return Err(ConfigError::Invalid {
                        name: "HERALD_JWT_ALGORITHMS",
                        reason: format!("{other:?} is not one of RS256, ES256, HS256"),
                    });
                }
            };
            algorithms.push(alg);
        }
        let cfg = Self {
            issuer: required(src, "HERALD_JWT_ISSUER")?,
            audience: required(src, "HERALD_JWT_AUDIENCE")?,
            algorithms,
            tenant_claim: optional(src, "HERALD_JWT_TENANT_CLAIM").unwrap_or_else(|| "tenant".into()),
            jwks: optional(src, "HERALD_JWT_JWKS"),
            jwks_url: optional(src, "HERALD_JWT_JWKS_URL"),
            hs256_secret: optional(src, "HERALD_JWT_HS256_SECRET"),
        };
        if cfg.algorithms.is_empty() {
            return Err(ConfigError::Invalid {
                name: "HERALD_JWT_ALGORITHMS",
                reason: "no algorithm".into(),
            });
        }
        let wants_keys = cfg.algorithms.iter().any(|a| *a != Algorithm::HS256);
        if wants_keys && cfg.jwks.is_none() && cfg.jwks_url.is_none() {
            return Err(ConfigError::Missing {
                name: "HERALD_JWT_JWKS_URL",
            });
        }
        if cfg.algorithms.contains(&Algorithm::HS256) {
            match &cfg.hs256_secret {
                None => {
                    return Err(ConfigError::Missing {
                        name: "HERALD_JWT_HS256_SECRET",
                    });
                }
                Some(s) if s.len() < 32 => {
                    return Err(ConfigError::Invalid {
                        name: "HERALD_JWT_HS256_SECRET",
                        reason: "must be at least 32 bytes".into(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(cfg)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthInitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot fetch JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("JWKS is not valid JSON: {0}")]
    Parse(String),
}

struct VerifyKey {
    key: DecodingKey,
    family: AlgorithmFamily,
    alg: Option<Algorithm>,
}

type KeySet = HashMap<String, VerifyKey>;

/// The shortest time between two fetches of the JWKS URL.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// A JWKS configured by URL: where to fetch it again, and when it was last tried.
struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    last_attempt: Mutex<Option<Instant>>,
}

impl RemoteJwks {
    /// Claims the right to fetch now, if the last attempt is at least `interval` old.
    fn may_fetch(&self, interval: Duration) -> bool {
        let Ok(mut last) = self.last_attempt.lock() else { return false };
        let due = last.is_none_or(|t| t.elapsed() >= interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// Verifies tokens; built once at init.
pub struct Verifier {
    keys: RwLock<Arc<KeySet>>,
    hmac: Option<DecodingKey>,
    cfg: JwtConfig,
    remote: Option<RemoteJwks>,
    refetch_interval: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self.current_keys().keys().cloned().collect();
        f.debug_struct("Verifier").field("kids", &kids).finish()
    }
}

impl Verifier {
    /// Builds the verifier. A JWKS configured by URL is fetched now; if that fails, init goes on
    /// with no keys (logged) and the first token with a `kid` fetches again.
    pub async fn load(cfg: JwtConfig) -> Result<Self, AuthInitError> {
        let url = if cfg.jwks.is_none() { cfg.jwks_url.clone() } else { None };
        let inline = cfg.jwks.clone();
        let mut verifier = Self::new(cfg, inline.as_deref())?;
        if let Some(url) = url {
            let tls = crate::domain::tls::client_config().map_err(|e| AuthInitError::Fetch {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| AuthInitError::Fetch {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            verifier.remote = Some(RemoteJwks {
                url,
                client,
                last_attempt: Mutex::new(None),
            });
            verifier.refresh().await;
        }
        Ok(verifier)
    }

    pub fn new(cfg: JwtConfig, jwks: Option<&str>) -> Result<Self, AuthInitError> {
        let keys = match jwks {
            Some(json) => parse_jwks(json)?,
            None => KeySet::new(),
        };
        let hmac = cfg.hs256_secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes()));
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            hmac,
            cfg,
            remote: None,
            refetch_interval: JWKS_REFETCH_INTERVAL,
        })
    }

    fn current_keys(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a complete key set (it is replaced whole).
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Fetches the JWKS URL again if the rate limit allows; keeps the current keys when the
    /// fetch or the parse fails. Returns whether the keys were replaced.
    async fn refresh(&self) -> bool {
        let Some(remote) = &self.remote else { return false };
        if !remote.may_fetch(self.refetch_interval) {
            return false;
        }
        let fetched = match fetch_jwks(&remote.client, &remote.url).await {
            Ok(json) => parse_jwks(&json),
            Err(e) => Err(e),
        };
        match fetched {
            Ok(keys) => {
                tracing::info!(url = %remote.url, kids = keys.len(), "JWKS fetched");
                let fresh = Arc::new(keys);
                match self.keys.write() {
                    Ok(mut k) => *k = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch failed; keeping the keys already known");
                false
            }
        }
    }

    /// [`Self::verify`], and when the token's `kid` is unknown and the JWKS comes from a URL,
    /// fetches the set again (rate-limited) and tries once more: keys rotate.
    pub async fn verify_refreshing(&self, token: &str) -> Result<Principal, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey) if self.refresh().await => self.verify(token),
            other => other,
        }
    }
}

/// The signing keys of a JWKS document.
fn parse_jwks(json: &str) -> Result<KeySet, AuthInitError> {
    let set: Value = serde_json::from_str(json).map_err(|e| AuthInitError::Parse(e.to_string()))?;
    let list = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| AuthInitError::Parse("no `keys` array".into()))?;
    let mut keys = KeySet::new();
    for raw in list {
        // Identity providers publish encryption keys and algorithms Herald does not use in the
        // same set; skip them instead of refusing the whole set.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if raw.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        let alg = raw.get("alg").and_then(Value::as_str).and_then(|a| a.parse::<Algorithm>().ok());
        keys.insert(
            kid,
            VerifyKey {
                family: key.family(),
                key,
                alg,
            },
        );
    }
    Ok(keys)
}

impl Verifier {
    pub fn tenant_claim(&self) -> &str {
        &self.cfg.tenant_claim
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        // Held for the decode below: the key is borrowed from this snapshot of the set.
        let keys: Arc<KeySet>;
        let key = match header.alg.family() {
            AlgorithmFamily::Hmac => self.hmac.as_ref().ok_or(AuthError::AlgorithmNotAllowed)?,
            family => {
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                keys = self.current_keys();
                let k = keys.get(kid).ok_or(AuthError::UnknownKey)?;
                if k.family != family || k.alg.is_some_and(|a| a != header.alg) {
                    return Err(AuthError::AlgorithmNotAllowed);
                }
                &k.key
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &validation).map_err(map_jwt_error)?;
        self.principal(&data.claims)
    }

    fn principal(&self, claims: &serde_json::Map<String, Value>) -> Result<Principal, AuthError> {
        let user = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        if !valid_id(user, 128) {
            return Err(AuthError::InvalidClaim("sub".into()));
        }
        let claim = self.cfg.tenant_claim.as_str();
        let tenant = claims
            .get(claim)
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::MissingClaim(claim.into()))?;
        validate_tenant(tenant).map_err(|_| AuthError::InvalidClaim(claim.into()))?;
        Ok(Principal {
            user: user.to_owned(),
            tenant: tenant.to_owned(),
            roles: string_list(claims.get("roles")).ok_or_else(|| AuthError::InvalidClaim("roles".into()))?,
            groups: string_list(claims.get("groups")).ok_or_else(|| AuthError::InvalidClaim("groups".into()))?,
        })
    }
}

/// An absent claim is an empty list; anything but an array of strings is invalid.
fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|i| i.as_str().map(str::to_owned)).collect(),
        Some(_) => None,
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidAudience => AuthError::WrongAudience,
        K::InvalidSignature => AuthError::BadSignature,
        K::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
        K::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        K::InvalidClaimFormat(c) => AuthError::InvalidClaim(c.clone()),
        _ => AuthError::Malformed,
    }
}

/// The largest JWKS response read (real ones are a few KB; a rotating provider's, tens).
pub const MAX_JWKS_BYTES: usize = 128 * 1024;

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<String, AuthInitError> {
    let fail = |reason: String| AuthInitError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let mut resp = client.get(url).send().await.map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    // Read in chunks up to the cap, whatever Content-Length claims: a response is never held
    // whole in memory past MAX_JWKS_BYTES.
    let too_large = || fail(format!("the JWKS is over {MAX_JWKS_BYTES} bytes"));
    if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|e| fail(e.to_string()))
}

/// The subprotocol a browser offers alongside its token: `Sec-WebSocket-Protocol: herald.v1, JWT`.
pub const SUBPROTOCOL: &str = "herald.v1";

/// Where the token came from in a WebSocket handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeToken {
    pub token: String,
    /// The token came as a subprotocol, so `$connect` must answer `herald.v1`.
    pub via_subprotocol: bool,
}

/// Finds the token in the `token` query parameter or the `Sec-WebSocket-Protocol` header.
pub fn handshake_token(query_token: Option<&str>, protocol_header: Option<&str>) -> Option<HandshakeToken> {
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return Some(HandshakeToken {
            token: t.to_owned(),
            via_subprotocol: false,
        });
    }
    let offered: Vec<&str> = protocol_header?.split(',').map(str::trim).collect();
    if !offered.contains(&SUBPROTOCOL) {
        return None;
    }
    offered
        .into_iter()
        .find(|p| *p != SUBPROTOCOL && !p.is_empty())
        .map(|t| HandshakeToken {
            token: t.to_owned(),
            via_subprotocol: true,
        })
}

#[cfg(test)]
mod tests;
