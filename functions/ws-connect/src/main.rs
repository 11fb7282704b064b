//! `ws-connect` Lambda: stores a new WebSocket connection and its automatic memberships. The logic lives in [`herald::handlers::ws_connect`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::ws_connect::WsConnect>().await
}
