//! `api` Lambda: the HTTP API. The logic lives in [`herald::handlers::api`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run_http().await
}
