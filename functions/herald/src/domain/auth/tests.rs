use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const JWKS: &str = include_str!("../../../tests/fixtures/jwks.json");
const RSA_DER: &[u8] = include_bytes!("../../../tests/fixtures/rsa-private-pkcs1.der");
const EC_DER: &[u8] = include_bytes!("../../../tests/fixtures/ec-private-pkcs8.der");
const RSA_PUBLIC_PEM: &str = include_str!("../../../tests/fixtures/rsa-public.pem");
const SECRET: &str = "a-development-secret-of-32-bytes!!";

fn config(algs: &[Algorithm]) -> JwtConfig {
    JwtConfig {
        issuer: "https://issuer.example".into(),
        audience: "herald".into(),
        algorithms: algs.to_vec(),
        tenant_claim: "tenant".into(),
        jwks: Some(JWKS.into()),
        jwks_url: None,
        hs256_secret: Some(SECRET.into()),
    }
}

fn verifier(algs: &[Algorithm]) -> Verifier {
    Verifier::new(config(algs), Some(JWKS)).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> serde_json::Value {
    json!({"sub": "u1", "tenant": "acme", "roles": ["student"], "groups": ["course:42"],
           "iss": "https://issuer.example", "aud": "herald", "exp": now() + 600, "nbf": now() - 10})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_der(RSA_DER),
        Algorithm::ES256 => EncodingKey::from_ec_der(EC_DER),
        _ => EncodingKey::from_secret(SECRET.as_bytes()),
    };
    encode(&header, claims, &key).unwrap()
}

fn rs(claims: &serde_json::Value) -> String {
    sign(Algorithm::RS256, Some("rsa-1"), claims)
}

#[test]
fn accepts_rs256_es256_and_hs256() {
    let v = verifier(&[Algorithm::RS256, Algorithm::ES256, Algorithm::HS256]);
    let expected = Principal {
        user: "u1".into(),
        tenant: "acme".into(),
        roles: vec!["student".into()],
        groups: vec!["course:42".into()],
    };
    assert_eq!(v.verify(&rs(&claims())).unwrap(), expected);
    assert_eq!(v.verify(&sign(Algorithm::ES256, Some("ec-1"), &claims())).unwrap(), expected);
    assert_eq!(v.verify(&sign(Algorithm::HS256, None, &claims())).unwrap(), expected);
}

#[test]
fn refuses_alg_none() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    let v = verifier(&[Algorithm::RS256]);
    assert_eq!(v.verify(&format!("{header}.{body}.")), Err(AuthError::Malformed));
    assert_eq!(v.verify(&format!("{header}.{body}")), Err(AuthError::Malformed));
}

#[test]
fn refuses_algorithm_confusion() {
    // The classic attack: HMAC-sign with the server's RSA *public* key as the secret.
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
    )
    .unwrap();
    assert_eq!(verifier(&[Algorithm::RS256]).verify(&token), Err(AuthError::AlgorithmNotAllowed));
    // Even when HS256 is enabled for development, only the configured secret verifies HMAC.
    assert_eq!(
        verifier(&[Algorithm::RS256, Algorithm::HS256]).verify(&token),
        Err(AuthError::BadSignature)
    );
    // An RS256 token whose kid names an EC key is refused too.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-1".into());
    let token = encode(&header, &claims(), &EncodingKey::from_ec_der(EC_DER)).unwrap();
    assert_eq!(
        verifier(&[Algorithm::RS256, Algorithm::ES256]).verify(&token),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn refuses_expired_and_not_yet_valid_with_30s_leeway() {
    let v = verifier(&[Algorithm::RS256]);
    let mut c = claims();
    c["exp"] = json!(now() - 31 - 5);
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::Expired));
    c["exp"] = json!(now() - 10);
    assert!(v.verify(&rs(&c)).is_ok(), "within leeway");
    let mut c = claims();
    c["nbf"] = json!(now() + 120);
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::NotYetValid));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::MissingClaim("exp".into())));
}

#[test]
fn refuses_wrong_issuer_and_audience() {
    let v = verifier(&[Algorithm::RS256]);
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::WrongIssuer));
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::WrongAudience));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::MissingClaim("aud".into())));
}

#[test]
fn refuses_tampered_payload_and_signature() {
    let v = verifier(&[Algorithm::RS256]);
    let token = rs(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["tenant"] = json!("globex");
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(c.to_string()), parts[2]);
    assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 0x01;
    let forged = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
}

#[test]
fn refuses_unknown_kid_and_missing_kid() {
    let v = verifier(&[Algorithm::RS256]);
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("nope"), &claims())),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(v.verify(&sign(Algorithm::RS256, None, &claims())), Err(AuthError::UnknownKey));
    // Encryption keys in the set are never used for signatures.
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("enc-1"), &claims())),
        Err(AuthError::UnknownKey)
    );
}

#[test]
fn refuses_missing_or_invalid_identity_claims() {
    let v = verifier(&[Algorithm::RS256]);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::MissingClaim("sub".into())));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("tenant");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::MissingClaim("tenant".into())));
    let mut c = claims();
    c["tenant"] = json!("a#b");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::InvalidClaim("tenant".into())));
    let mut c = claims();
    c["roles"] = json!("admin");
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::InvalidClaim("roles".into())));
}

#[test]
fn tenant_claim_name_is_configurable() {
    let mut cfg = config(&[Algorithm::RS256]);
    cfg.tenant_claim = "https://acme.example/org".into();
    let v = Verifier::new(cfg, Some(JWKS)).unwrap();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("tenant");
    c["https://acme.example/org"] = json!("org-7");
    assert_eq!(v.verify(&rs(&c)).unwrap().tenant, "org-7");
}

#[test]
fn refuses_oversized_and_empty_tokens() {
    let v = verifier(&[Algorithm::RS256]);
    let mut c = claims();
    c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
    assert_eq!(v.verify(&rs(&c)), Err(AuthError::TooLarge));
    assert_eq!(v.verify(""), Err(AuthError::Missing));
    assert_eq!(v.verify("not.a.jwt"), Err(AuthError::Malformed));
}

#[test]
fn config_pins_algorithms_and_requires_keys() {
    use crate::domain::config::tests::source;
    let base = [("HERALD_JWT_ISSUER", "i"), ("HERALD_JWT_AUDIENCE", "a")];
    let err = JwtConfig::from_source(&source(&base)).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Missing {
            name: "HERALD_JWT_JWKS_URL"
        }
    );
    let mut with = base.to_vec();
    with.push(("HERALD_JWT_ALGORITHMS", "HS256,none"));
    assert!(matches!(JwtConfig::from_source(&source(&with)), Err(ConfigError::Invalid { .. })));
    let mut with = base.to_vec();
    with.extend([("HERALD_JWT_ALGORITHMS", "HS256"), ("HERALD_JWT_HS256_SECRET", "short")]);
    assert!(matches!(
        JwtConfig::from_source(&source(&with)),
        Err(ConfigError::Invalid {
            name: "HERALD_JWT_HS256_SECRET",
            ..
        })
    ));
    let mut with = base.to_vec();
    with.extend([("HERALD_JWT_ALGORITHMS", "ES256"), ("HERALD_JWT_JWKS", JWKS)]);
    assert_eq!(JwtConfig::from_source(&source(&with)).unwrap().algorithms, vec![Algorithm::ES256]);
}

#[test]
fn finds_handshake_token_in_query_or_subprotocol() {
    assert_eq!(
        handshake_token(Some("abc"), None),
        Some(HandshakeToken {
            token: "abc".into(),
            via_subprotocol: false
        })
    );
    assert_eq!(
        handshake_token(None, Some("herald.v1, abc")),
        Some(HandshakeToken {
            token: "abc".into(),
            via_subprotocol: true
        })
    );
    assert_eq!(handshake_token(None, Some("abc")), None, "must offer herald.v1");
    assert_eq!(handshake_token(Some(""), Some("herald.v1")), None);
    assert_eq!(handshake_token(None, None), None);
}

// ------------------------------------------------------------------ JWKS from a URL, rotating

/// A JWKS endpoint on a loopback port: serves what `body` holds (503 while it is `None`) and
/// counts the requests it answers.
struct JwksServer {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn jwks_server(initial: Option<String>) -> JwksServer {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let body = std::sync::Arc::new(std::sync::Mutex::new(initial));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (b, h) = (body.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            h.fetch_add(1, Ordering::SeqCst);
            let reply = match b.lock().unwrap().clone() {
                Some(json) => format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                ),
                None => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
            };
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    JwksServer { url, body, hits }
}

/// The fixture's JWKS with only the keys named.
fn jwks_with(kids: &[&str]) -> String {
    let mut set: serde_json::Value = serde_json::from_str(JWKS).unwrap();
    let keys = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap_or("")))
        .cloned()
        .collect();
    set["keys"] = serde_json::Value::Array(keys);
    set.to_string()
}

fn url_config(url: &str) -> JwtConfig {
    JwtConfig {
        jwks: None,
        jwks_url: Some(url.to_owned()),
        ..config(&[Algorithm::RS256, Algorithm::ES256])
    }
}

fn hits(server: &JwksServer) -> usize {
    server.hits.load(std::sync::atomic::Ordering::SeqCst)
}

/// Issue "nothing lost", defect 6: keys were fetched once at init, so a rotation refused every
/// token signed with the new key until instances recycled.
#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_first_uses_it() {
    let server = jwks_server(Some(jwks_with(&["ec-1"]))).await;
    let mut v = Verifier::load(url_config(&server.url)).await.unwrap();
    v.refetch_interval = std::time::Duration::ZERO;
    let token = rs(&claims()); // kid rsa-1: not published yet
    assert_eq!(v.verify_refreshing(&token).await, Err(AuthError::UnknownKey));
    *server.body.lock().unwrap() = Some(jwks_with(&["ec-1", "rsa-1"])); // the provider rotates
    assert_eq!(v.verify_refreshing(&token).await.map(|p| p.user), Ok("u1".to_owned()));
    assert_eq!(
        v.verify(&sign(Algorithm::ES256, Some("ec-1"), &claims())).map(|p| p.user),
        Ok("u1".to_owned())
    );
}

/// ... and a JWKS outage at cold start failed init.
#[tokio::test]
async fn a_jwks_outage_at_cold_start_does_not_fail_init() {
    let server = jwks_server(None).await;
    let mut v = Verifier::load(url_config(&server.url)).await.expect("init goes on without keys");
    v.refetch_interval = std::time::Duration::ZERO;
    let token = rs(&claims());
    assert_eq!(v.verify_refreshing(&token).await, Err(AuthError::UnknownKey));
    *server.body.lock().unwrap() = Some(JWKS.to_owned()); // the provider is back
    assert!(v.verify_refreshing(&token).await.is_ok());
}

#[tokio::test]
async fn an_outage_later_keeps_the_keys_already_known() {
    let server = jwks_server(Some(JWKS.to_owned())).await;
    let mut v = Verifier::load(url_config(&server.url)).await.unwrap();
    v.refetch_interval = std::time::Duration::ZERO;
    *server.body.lock().unwrap() = None;
    let unknown = sign(Algorithm::RS256, Some("rsa-2"), &claims());
    assert_eq!(v.verify_refreshing(&unknown).await, Err(AuthError::UnknownKey));
    assert_eq!(hits(&server), 2, "the unknown kid made it try");
    assert!(v.verify_refreshing(&rs(&claims())).await.is_ok(), "the cached key still verifies");
}

/// #28: a JWKS response is read whole into memory; an identity provider (or whoever answers
/// for its URL) must not make every instance allocate without bound. Over the cap it counts as
/// a failed fetch: no keys from it.
#[tokio::test]
async fn an_oversized_jwks_response_is_refused() {
    let padded = format!("{JWKS}{}", " ".repeat(super::MAX_JWKS_BYTES));
    let server = jwks_server(Some(padded)).await;
    let v = Verifier::load(url_config(&server.url)).await.expect("init goes on without keys");
    assert_eq!(v.verify_refreshing(&rs(&claims())).await, Err(AuthError::UnknownKey));
    // Just under the cap is fine.
    let server = jwks_server(Some(format!("{JWKS}{}", " ".repeat(super::MAX_JWKS_BYTES - JWKS.len() - 1)))).await;
    let v = Verifier::load(url_config(&server.url)).await.unwrap();
    assert!(v.verify_refreshing(&rs(&claims())).await.is_ok());
}

#[tokio::test]
async fn made_up_kids_fetch_at_most_once_per_interval() {
    let server = jwks_server(Some(JWKS.to_owned())).await;
    let v = Verifier::load(url_config(&server.url)).await.unwrap();
    for i in 0..20 {
        let token = sign(Algorithm::RS256, Some(&format!("made-up-{i}")), &claims());
        assert_eq!(v.verify_refreshing(&token).await, Err(AuthError::UnknownKey));
    }
    assert_eq!(hits(&server), 1, "only the fetch at init: the others fell within the interval");
}
