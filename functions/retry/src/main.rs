//! `retry` Lambda: re-posts failed deliveries with backoff. The logic lives in [`herald::handlers::retry`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::retry::Retry>().await
}
