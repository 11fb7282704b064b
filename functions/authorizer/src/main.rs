//! `authorizer` Lambda: REQUEST authorizer of the WebSocket $connect route. The logic lives in [`herald::handlers::authorizer`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::authorizer::Authorizer>().await
}
