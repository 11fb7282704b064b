//! `ws-join` Lambda: authorizes and applies join/leave frames. The logic lives in [`herald::handlers::ws_join`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::ws_join::WsJoin>().await
}
