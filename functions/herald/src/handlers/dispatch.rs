//! `dispatch`: the SQS consumer that turns producer messages into pushes, and runs the messages
//! Herald puts on its internal queue (`services::intake`).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

use crate::BoxError;
use crate::services::deps::Deps;
use crate::services::intake::Intake;
use crate::services::notify::Notifier;
use crate::services::runtime::{Handler, InitError};
use crate::services::web_push::Pusher;

pub struct Dispatch {
    intake: Intake,
}

impl Handler for Dispatch {
    type Event = SqsEvent;
    type Output = SqsBatchResponse;
    const NAME: &'static str = "dispatch";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        let (store, queue, limits) = (d.store()?, d.queue()?, d.limits()?);
        let poster = d.poster()?.aggregating(Duration::from_millis(limits.aggregate_ms));
        let notifier = Notifier::new(
            store,
            queue.clone(),
            poster,
            d.scheduler()?,
            limits.clone(),
            d.roles()?,
            d.presence(Self::NAME)?,
        )
        .with_push(Pusher::sender(&d.push_settings()?)?)
        .with_receipts(d.receipts(Self::NAME)?);
        Ok(Self {
            intake: Intake::new(notifier, queue, limits),
        })
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        Ok(self.intake.batch(event).await)
    }
}
