//! VAPID (RFC 8292): the application server identifies itself to push services with an ES256 JWT
//! (`aud` the push service's origin, `exp` at most 24 h ahead, `sub` a contact) and its public
//! key, `Authorization: vapid t=JWT, k=KEY`. The key pair is configuration (a secret in AWS),
//! read once at init; clients subscribe with the public key (`GET /push/vapid-public-key`).

use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// How long a VAPID token is valid; RFC 8292 allows at most 24 hours.
pub const TOKEN_SECONDS: i64 = 12 * 3600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VapidError {
    #[error("the VAPID private key must be the base64url of a 32-byte P-256 scalar")]
    PrivateKey,
    #[error("the VAPID public key does not belong to the private key")]
    Mismatch,
    #[error("the VAPID subject must be a mailto: or https: URI")]
    Subject,
    #[error("the push endpoint has no origin to address the token to")]
    Audience,
    #[error("signing the VAPID token failed")]
    Sign,
}

/// The application server's key pair and contact.
#[derive(Debug)]
pub struct Vapid {
    key: EcdsaKeyPair,
    public: String,
    subject: String,
    rng: SystemRandom,
}

impl Vapid {
    /// `private`: base64url (padding optional) of the 32-byte private scalar, the format web-push
    /// tools print. `public`, when configured too, must be its public key.
    pub fn new(private: &str, public: Option<&str>, subject: &str) -> Result<Self, VapidError> {
        let scalar = B64
            .decode(private.trim().trim_end_matches('='))
            .map_err(|_| VapidError::PrivateKey)?;
        let ecdh = PrivateKey::from_private_key(&ECDH_P256, &scalar).map_err(|_| VapidError::PrivateKey)?;
        let point = ecdh.compute_public_key().map_err(|_| VapidError::PrivateKey)?;
        let key = EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &scalar, point.as_ref())
            .map_err(|_| VapidError::PrivateKey)?;
        let derived = B64.encode(point.as_ref());
        if public.is_some_and(|p| p.trim().trim_end_matches('=') != derived) {
            return Err(VapidError::Mismatch);
        }
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(VapidError::Subject);
        }
        Ok(Self {
            key,
            public: derived,
            subject: subject.to_owned(),
            rng: SystemRandom::new(),
        })
    }

    /// The public key, base64url of the uncompressed point (what `applicationServerKey` takes).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header value for a push to `endpoint`, valid from `now` (epoch s).
    pub fn authorization(&self, endpoint: &str, now: i64) -> Result<String, VapidError> {
        let aud = audience(endpoint).ok_or(VapidError::Audience)?;
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({"aud": aud, "exp": now + TOKEN_SECONDS, "sub": self.subject});
        let claims = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| VapidError::Sign)?;
        Ok(format!(
            "vapid t={signing_input}.{}, k={}",
            B64.encode(signature.as_ref()),
            self.public
        ))
    }
}

/// The origin (`scheme://host[:port]`) of a push endpoint: a VAPID token's audience.
pub fn audience(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    const PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const PUBLIC: &str = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";

    #[test]
    fn signs_a_token_the_public_key_verifies() {
        let vapid = Vapid::new(PRIVATE, Some(PUBLIC), "mailto:ops@example.com").unwrap();
        assert_eq!(vapid.public_key(), PUBLIC);
        let header = vapid.authorization("https://push.example.net/wpush/v2/abc?x=1", 1_000).unwrap();
        let (t, k) = header.strip_prefix("vapid t=").and_then(|r| r.split_once(", k=")).unwrap();
        assert_eq!(k, PUBLIC);
        let (input, sig) = t.rsplit_once('.').unwrap();
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, B64.decode(PUBLIC).unwrap());
        key.verify(input.as_bytes(), &B64.decode(sig).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&B64.decode(input.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["exp"], 1_000 + TOKEN_SECONDS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
    }

    #[test]
    fn refuses_bad_configuration() {
        assert_eq!(Vapid::new("short", None, "mailto:a@b").err(), Some(VapidError::PrivateKey));
        assert_eq!(
            Vapid::new(
                PRIVATE,
                Some("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
                "mailto:a@b"
            )
            .err(),
            Some(VapidError::Mismatch)
        );
        assert_eq!(Vapid::new(PRIVATE, None, "ops@example.com").err(), Some(VapidError::Subject));
        assert_eq!(
            audience("http://127.0.0.1:8080/_herald/push/send/1").as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }
}
