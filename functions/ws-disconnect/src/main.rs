//! `ws-disconnect` Lambda: removes a closed WebSocket connection and its memberships. The logic lives in [`herald::handlers::ws_disconnect`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::ws_disconnect::WsDisconnect>().await
}
