//! `ws-message` Lambda: answers resume, ack and ping frames. The logic lives in [`herald::handlers::ws_message`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::ws_message::WsMessage>().await
}
