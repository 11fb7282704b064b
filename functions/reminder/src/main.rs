//! `reminder` Lambda: EventBridge Scheduler target for scheduled notifications. The logic lives in [`herald::handlers::reminder`].

#[tokio::main]
async fn main() -> Result<(), herald::BoxError> {
    herald::runtime::run::<herald::handlers::reminder::ReminderTarget>().await
}
