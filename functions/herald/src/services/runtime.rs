//! Process start-up shared by every function: logging, the AWS SDK configuration, and the loop
//! that hands events to a handler. Everything here runs once per cold start.

use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::BoxError;
use crate::domain::auth::AuthInitError;
use crate::domain::config::ConfigError;
use crate::io::delivery::PosterError;
use crate::io::sdk_http::SdkHttpClient;

/// A failed init names what is wrong; Lambda reports it as an init error.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] AuthInitError),
    #[error(transparent)]
    Delivery(#[from] PosterError),
    #[error(transparent)]
    Push(#[from] crate::services::web_push::PushInitError),
    #[error("TLS for the AWS SDK clients: {0}")]
    Tls(#[source] std::sync::Arc<crate::domain::tls::TlsError>),
}

/// JSON logs in Lambda (CloudWatch Logs Insights can query fields); `HERALD_LOG_FORMAT=text`
/// for humans. The level comes from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`, default `info`.
pub fn init_tracing() {
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .unwrap_or_else(|_| "info".into())
        .to_lowercase();
    let filter = tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let text = std::env::var("HERALD_LOG_FORMAT").is_ok_and(|f| f == "text");
    let _ = if text {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init()
    };
}

/// The SDK configuration. Fan-out posts make a single attempt each: Herald's own retry queue
/// does the backing off, across invocations, without holding a Lambda busy while it sleeps.
/// Every SDK client (and the loader's own credential providers) sends through one
/// [`SdkHttpClient`]: the SDK's default client parsed the system's root certificates at init.
pub async fn sdk_config() -> Result<SdkConfig, InitError> {
    let http = SdkHttpClient::shared().map_err(InitError::Tls)?;
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await)
}

/// A function's logic: built once at init, then called per event.
pub trait Handler: Sized + Send + Sync + 'static {
    type Event: DeserializeOwned + Send;
    type Output: Serialize;
    const NAME: &'static str;
    /// Whether `init` uses the SDK configuration. Without it the function gets an empty one and
    /// skips loading it (the credential and region chains, an STS client for web identity): a
    /// third of the init instructions of a function that calls no AWS API (docs/performance.md).
    const USES_AWS: bool = true;

    fn init(sdk: SdkConfig) -> impl Future<Output = Result<Self, InitError>> + Send;
    fn handle(&self, event: Self::Event) -> impl Future<Output = Result<Self::Output, BoxError>> + Send;
}

/// The whole `main` of a function: logs, SDK config, init, then the Lambda runtime loop.
pub async fn run<H: Handler>() -> Result<(), BoxError> {
    init_tracing();
    let handler = match init::<H>().await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(function = H::NAME, error = %e, "init failed");
            return Err(e.into());
        }
    };
    let handler = &handler;
    // Boxing the handler future keeps the runtime's future type shallow (rustc's layout
    // recursion limit) at the cost of one allocation per invocation.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<H::Event>| {
        Box::pin(handler.handle(event.payload))
    }))
    .await
}

async fn init<H: Handler>() -> Result<H, InitError> {
    let sdk = if H::USES_AWS {
        sdk_config().await?
    } else {
        SdkConfig::builder().build()
    };
    H::init(sdk).await
}

async fn init_http<H: HttpHandler>() -> Result<H, InitError> {
    H::init(sdk_config().await?).await
}

/// A function behind an HTTP API (payload 2.0): lambda_http adapts the event to `http` types, and
/// every error is already an HTTP response, so there is no error path to the runtime.
pub trait HttpHandler: Sized + Send + Sync + 'static {
    const NAME: &'static str;

    fn init(sdk: SdkConfig) -> impl Future<Output = Result<Self, InitError>> + Send;
    fn handle(&self, req: lambda_http::Request) -> impl Future<Output = lambda_http::Response<lambda_http::Body>> + Send;
}

/// The whole `main` of an HTTP function: logs, SDK config, init, then lambda_http's loop.
pub async fn run_http<H: HttpHandler>() -> Result<(), BoxError> {
    init_tracing();
    let handler = match init_http::<H>().await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(function = H::NAME, error = %e, "init failed");
            return Err(e.into());
        }
    };
    let handler = &handler;
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| async move {
        Ok::<_, BoxError>(handler.handle(req).await)
    }))
    .await
}
