//! The HTTP client the AWS SDK clients send through: reqwest with Herald's one TLS
//! configuration ([`crate::domain::tls`]), instead of the SDK's default hyper client.
//!
//! Why: the SDK's default client loads and parses the system's root certificates while the
//! first SDK client is constructed (it builds a connector on purpose during client validation),
//! and the configuration loader constructs one (an STS client for web-identity credentials) even
//! when credentials come from the environment. That PEM parsing was 85–95 % of the instructions of
//! every function's init (docs/performance.md), and each further SDK client parsed the roots
//! again into its own TLS configuration. Here the TLS configuration is built once, from anchors
//! compiled into the binary, and every SDK client shares one connection pool.
//!
//! Same contract as the default client: connect and read timeouts from the SDK's settings, one
//! pooled connector per distinct setting, and transport errors classified the way the SDK's
//! retry strategy expects (timeouts and I/O failures are transient and retried).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;

use crate::domain::tls::TlsError;

type Key = (Option<Duration>, Option<Duration>);

/// The SDK's [`HttpClient`]; cheap to clone into an `SdkConfig`.
#[derive(Debug)]
pub struct SdkHttpClient {
    tls: rustls::ClientConfig,
    /// One connector (one reqwest client, one pool) per (connect, read) timeout pair. Herald's
    /// SDK clients all share one `SdkConfig`, so in practice this holds one entry.
    connectors: Mutex<Vec<(Key, SharedHttpConnector)>>,
}

impl SdkHttpClient {
    /// Fails only when `SSL_CERT_FILE`/`SSL_CERT_DIR` name no usable root certificate.
    pub fn shared() -> Result<SharedHttpClient, Arc<TlsError>> {
        Ok(SharedHttpClient::new(Self {
            tls: crate::domain::tls::client_config()?,
            connectors: Mutex::new(Vec::new()),
        }))
    }

    fn connector(&self, key: Key) -> Result<SharedHttpConnector, reqwest::Error> {
        let mut connectors = self.connectors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, c)) = connectors.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder().tls_backend_preconfigured(self.tls.clone());
        if let Some(connect) = key.0 {
            builder = builder.connect_timeout(connect);
        }
        if let Some(read) = key.1 {
            builder = builder.read_timeout(read);
        }
        let connector = SharedHttpConnector::new(Connector { http: builder.build()? });
        connectors.push((key, connector.clone()));
        Ok(connector)
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        match self.connector((settings.connect_timeout(), settings.read_timeout())) {
            Ok(connector) => connector,
            // reqwest fails to build only on a TLS or resolver setup error, and the TLS
            // configuration is already built; every request then reports the error instead of
            // the process panicking.
            Err(e) => SharedHttpConnector::new(Broken(Arc::new(e))),
        }
    }
}

#[derive(Debug)]
struct Connector {
    http: reqwest::Client,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.http.clone();
        HttpConnectorFuture::new(async move { send(&http, request).await })
    }
}

#[derive(Debug)]
struct Broken(Arc<reqwest::Error>);

impl HttpConnector for Broken {
    fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
        let error = Arc::clone(&self.0);
        HttpConnectorFuture::ready(Err(ConnectorError::other(Box::new(error), None)))
    }
}

async fn send(http: &reqwest::Client, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
    let method = reqwest::Method::from_bytes(request.method().as_bytes()).map_err(|e| ConnectorError::user(e.into()))?;
    // DynamoDB, SQS and Scheduler requests are JSON documents the SDK serialized in memory.
    let body = request
        .body()
        .bytes()
        .ok_or_else(|| ConnectorError::user("streaming request bodies are not supported".into()))?
        .to_vec();
    let mut builder = http.request(method, request.uri()).body(body);
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.map_err(classify)?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(classify)?;
    let mut out = http::Response::new(SdkBody::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    HttpResponse::try_from(out).map_err(|e| ConnectorError::other(e.into(), None))
}

/// As the SDK's own client classifies hyper's errors: timeouts and I/O failures (connect,
/// reset, a connection closed mid-request) are transient; a request that could not be built is
/// the caller's; anything else is unknown (not retried).
fn classify(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_builder() {
        ConnectorError::user(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() || has_io_source(&e) {
        ConnectorError::io(e.into())
    } else if e.is_decode() {
        // A truncated response body (hyper's IncompleteMessage): transient, as the SDK treats it.
        ConnectorError::other(e.into(), Some(ErrorKind::TransientError))
    } else {
        ConnectorError::other(e.into(), None)
    }
}

fn has_io_source(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = e.source();
    while let Some(err) = next {
        if err.is::<std::io::Error>() {
            return true;
        }
        next = err.source();
    }
    false
}
