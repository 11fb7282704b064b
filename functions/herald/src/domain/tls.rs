//! The one TLS client configuration (rustls + aws-lc) of Herald's own HTTP clients: the signed
//! `@connections` poster and the JWKS fetch.
//!
//! Why not reqwest's default: it builds a platform verifier, which on Linux reads and parses
//! every certificate of the system store (`/etc/ssl/certs`, `/etc/pki/tls/certs`) while the
//! client is built, i.e. during init: measured as most of the init time that a function with a
//! poster spends above one without (docs/performance.md). Here the trust anchors are Mozilla's
//! root program compiled into the binary (`webpki-roots`: already-parsed anchors, nothing to
//! read or decode), which is the store the Lambda base images ship too. Whoever points
//! `SSL_CERT_FILE` or `SSL_CERT_DIR` at their own roots (the usual way to trust a private CA in
//! a Lambda) keeps getting exactly those, read as before.

use std::sync::{Arc, LazyLock};

use rustls::ClientConfig;

/// Building the trust store failed (only possible for roots named by `SSL_CERT_FILE`/`_DIR`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no usable root certificate in SSL_CERT_FILE/SSL_CERT_DIR ({0})")]
    NoRoots(String),
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Built on first use and shared: every client of the process clones the same configuration
/// (its root store and crypto provider are behind `Arc`s).
static CONFIG: LazyLock<Result<ClientConfig, Arc<TlsError>>> = LazyLock::new(|| build().map_err(Arc::new));

/// The process's TLS client configuration, for `reqwest::ClientBuilder::tls_backend_preconfigured`.
pub fn client_config() -> Result<ClientConfig, Arc<TlsError>> {
    CONFIG.clone()
}

fn build() -> Result<ClientConfig, TlsError> {
    let roots = if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        native_roots()?
    } else {
        rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration itself without its http2 feature.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The roots an operator named explicitly, read the way reqwest's platform verifier reads them.
fn native_roots() -> Result<rustls::RootCertStore, TlsError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(TlsError::NoRoots(errors.join("; ")));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_roots_include_amazons_and_offer_http1() {
        let config = build().map_err(|e| e.to_string());
        assert!(
            config.as_ref().is_ok_and(|c| c.alpn_protocols == [b"http/1.1".to_vec()]),
            "{config:?}"
        );
        // Amazon Root CA 1, which execute-api and the AWS endpoints chain to.
        let amazon = webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .any(|a| String::from_utf8_lossy(a.subject.as_ref()).contains("Amazon Root CA 1"));
        assert!(amazon);
    }
}
