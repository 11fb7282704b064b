//! RFC 8291 message encryption for Web Push: ECDH P-256 with the subscription's key, HKDF-SHA256
//! mixing in its auth secret, AES-128-GCM, in the `aes128gcm` content coding of RFC 8188 with a
//! single record. All of it from aws-lc-rs, the crypto library the binary already links (rustls,
//! jsonwebtoken): one crypto stack.
//!
//! Pure: the sender's ephemeral key and the salt are parameters of [`encrypt_with`], so the
//! RFC's Appendix A example is a unit test; [`encrypt`] draws fresh ones.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hmac;

/// Bytes of an uncompressed P-256 point (`0x04 || x || y`).
pub const PUBLIC_KEY_LEN: usize = 65;
/// Bytes of a subscription's auth secret.
pub const AUTH_LEN: usize = 16;
/// The largest push message body push services must accept (RFC 8030 §7.2).
pub const MAX_MESSAGE: usize = 4096;
/// The record's header (salt 16, record size 4, key id length 1, key id 65), the AEAD tag (16)
/// and the padding delimiter (1).
pub const OVERHEAD: usize = 16 + 4 + 1 + PUBLIC_KEY_LEN + 16 + 1;
/// The largest plaintext that fits one record of a 4096-byte message.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - OVERHEAD;
/// Plaintexts are padded up to a multiple of this (RFC 8291 §4 recommends padding): the push
/// service, which sees every message's length, then learns only the bucket, not the text's size.
pub const PAD_BUCKET: usize = 512;

/// The zero bytes that pad a plaintext of `len` bytes up to its bucket (never past one record).
pub fn padding_for(len: usize) -> usize {
    len.div_ceil(PAD_BUCKET)
        .max(1)
        .saturating_mul(PAD_BUCKET)
        .min(MAX_PLAINTEXT)
        .saturating_sub(len)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EceError {
    #[error("the payload is {0} bytes; one push message holds at most {MAX_PLAINTEXT}")]
    TooLarge(usize),
    #[error("the subscription's p256dh is not a P-256 public key")]
    PeerKey,
    #[error("the subscription's auth secret is not {AUTH_LEN} bytes")]
    Auth,
    #[error("key generation or encryption failed")]
    Crypto,
}

/// Encrypts `plaintext` for a subscription with a fresh ephemeral key and salt, padded to its
/// bucket ([`PAD_BUCKET`]).
pub fn encrypt(plaintext: &[u8], ua_public: &[u8], auth: &[u8]) -> Result<Vec<u8>, EceError> {
    let key = PrivateKey::generate(&ECDH_P256).map_err(|_| EceError::Crypto)?;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| EceError::Crypto)?;
    encrypt_with(plaintext, ua_public, auth, &key, salt, padding_for(plaintext.len()))
}

/// [`encrypt`] with a given ephemeral key (`as_private`), salt and number of padding bytes.
pub fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    as_private: &PrivateKey,
    salt: [u8; 16],
    padding: usize,
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge(plaintext.len()));
    }
    let padding = padding.min(MAX_PLAINTEXT - plaintext.len());
    if auth.len() != AUTH_LEN {
        return Err(EceError::Auth);
    }
    if ua_public.len() != PUBLIC_KEY_LEN {
        return Err(EceError::PeerKey);
    }
    let as_public = as_private.compute_public_key().map_err(|_| EceError::Crypto)?;
    let as_public = as_public.as_ref();
    let ecdh_secret = agreement::agree(
        as_private,
        UnparsedPublicKey::new(&ECDH_P256, ua_public),
        EceError::PeerKey,
        |secret| Ok(secret.to_vec()),
    )?;
    let (cek, nonce) = derive(&ecdh_secret, auth, &salt, ua_public, as_public);
    let mut body = Vec::with_capacity(plaintext.len() + padding + OVERHEAD);
    body.extend_from_slice(plaintext);
    // The last (and only) record's padding delimiter, then the padding.
    body.push(0x02);
    body.resize(body.len() + padding, 0);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EceError::Crypto)?);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
        .map_err(|_| EceError::Crypto)?;
    let mut out = Vec::with_capacity(body.len() + 86);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&(MAX_MESSAGE as u32).to_be_bytes());
    out.push(PUBLIC_KEY_LEN as u8);
    out.extend_from_slice(as_public);
    out.extend_from_slice(&body);
    Ok(out)
}

/// RFC 8291 §3.4 and RFC 8188 §2.2: the content encryption key and the nonce.
fn derive(ecdh_secret: &[u8], auth: &[u8], salt: &[u8], ua_public: &[u8], as_public: &[u8]) -> ([u8; 16], [u8; 12]) {
    let prk_key = hmac_sha256(auth, &[ecdh_secret]);
    let ikm = hmac_sha256(&prk_key, &[b"WebPush: info\0", ua_public, as_public, &[1]]);
    let prk = hmac_sha256(salt, &[&ikm]);
    let cek_full = hmac_sha256(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
    let nonce_full = hmac_sha256(&prk, &[b"Content-Encoding: nonce\0", &[1]]);
    let mut cek = [0u8; 16];
    cek.copy_from_slice(&cek_full[..16]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&nonce_full[..12]);
    (cek, nonce)
}

/// HMAC-SHA-256 over the concatenation of `parts`: HKDF's extract, and its expand for one block
/// (every output here is at most 32 bytes).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    /// The receiving side (what a browser does), for round trips.
    pub fn decrypt(message: &[u8], ua_private: &PrivateKey, auth: &[u8]) -> Vec<u8> {
        let salt = &message[..16];
        let idlen = message[20] as usize;
        let as_public = &message[21..21 + idlen];
        let ua_public = ua_private.compute_public_key().unwrap();
        let secret = agreement::agree(ua_private, UnparsedPublicKey::new(&ECDH_P256, as_public), (), |s| Ok(s.to_vec())).unwrap();
        let (cek, nonce) = derive(&secret, auth, salt, ua_public.as_ref(), as_public);
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).unwrap());
        let mut body = message[21 + idlen..].to_vec();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .unwrap();
        // The padding zeros after the record's 0x02 delimiter (RFC 8188 §2).
        let end = plain.iter().rposition(|b| *b != 0).unwrap();
        assert_eq!(plain[end], 2, "the last record ends with the 0x02 delimiter");
        plain[..end].to_vec()
    }

    fn b(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A: the exact message for the example's keys, salt and plaintext.
    #[test]
    fn matches_rfc8291_appendix_a() {
        let plaintext = b("V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24");
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
        let as_private = PrivateKey::from_private_key(&ECDH_P256, &b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let ua_public = b("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let auth = b("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = b("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let message = encrypt_with(&plaintext, &ua_public, &auth, &as_private, salt, 0).unwrap();
        assert_eq!(
            B64.encode(&message),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
        let ua_private = PrivateKey::from_private_key(&ECDH_P256, &b("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")).unwrap();
        assert_eq!(decrypt(&message, &ua_private, &auth), plaintext);
    }

    #[test]
    fn round_trips_a_full_record_and_refuses_a_bigger_one() {
        let ua = PrivateKey::generate(&ECDH_P256).unwrap();
        let ua_public = ua.compute_public_key().unwrap();
        let auth = [7u8; 16];
        let plaintext = vec![b'x'; MAX_PLAINTEXT];
        let message = encrypt(&plaintext, ua_public.as_ref(), &auth).unwrap();
        assert_eq!(message.len(), MAX_MESSAGE);
        assert_eq!(decrypt(&message, &ua, &auth), plaintext);
        assert_eq!(
            encrypt(&[0; MAX_PLAINTEXT + 1], ua_public.as_ref(), &auth),
            Err(EceError::TooLarge(MAX_PLAINTEXT + 1))
        );
        assert_eq!(encrypt(b"x", &[4; 65], &auth), Err(EceError::PeerKey));
        // Small texts are padded to their bucket: the push service sees the bucket's size only.
        let short = encrypt(b"hi", ua_public.as_ref(), &auth).unwrap();
        let long = encrypt(&[b'y'; 500], ua_public.as_ref(), &auth).unwrap();
        assert_eq!(short.len(), long.len());
        assert_eq!(short.len(), PAD_BUCKET + OVERHEAD);
        assert_eq!(decrypt(&short, &ua, &auth), b"hi");
        assert_eq!(encrypt(b"x", ua_public.as_ref(), &[0; 15]), Err(EceError::Auth));
    }
}
