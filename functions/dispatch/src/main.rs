//! `dispatch` Lambda: consumes the dispatch queue: validate, dedupe, log, fan out. The logic lives in [`herald::handlers::dispatch`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::dispatch::Dispatch>().await
}
