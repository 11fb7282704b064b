//! `retry`: the retry queue's consumer. It tells a push retry from a post retry and runs the
//! round (`services::retries`); a message that is neither is dropped, since it can never succeed.

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

use crate::BoxError;
use crate::domain::metrics::Metrics;
use crate::io::queue::{PushRetry, RetryJob, redeliver};
use crate::services::deps::Deps;
use crate::services::retries::{Retries, RetryError, RetryOutcome};
use crate::services::runtime::{Handler, InitError};
use crate::services::web_push::Pusher;

pub struct Retry {
    retries: Retries,
}

impl Retry {
    pub async fn job(&self, body: &str) -> Result<RetryOutcome, RetryError> {
        // A push retry is `{"push": {...}}`, which never parses as a post retry.
        if let Ok(PushRetry { push }) = serde_json::from_str::<PushRetry>(body) {
            return self.retries.push(push).await;
        }
        let Ok(job) = serde_json::from_str::<RetryJob>(body) else {
            tracing::error!(body_len = body.len(), "retry message is not a retry job; dropped");
            Metrics::new("retry").count("Malformed", 1).flush();
            return Ok(RetryOutcome::Malformed);
        };
        self.retries.posts(job).await
    }
}

impl Handler for Retry {
    type Event = SqsEvent;
    type Output = SqsBatchResponse;
    const NAME: &'static str = "retry";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        let (store, queue, limits) = (d.store()?, d.queue()?, d.limits()?);
        let pusher = Pusher::new(
            store.clone(),
            queue.clone(),
            Pusher::sender(&d.push_settings()?)?,
            limits.retry_max_attempts,
        );
        Ok(Self {
            retries: Retries::new(store, queue, d.poster()?, limits, d.presence_policy()?, pusher),
        })
    }

    async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, BoxError> {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            if let Err(e) = self.job(record.body.as_deref().unwrap_or_default()).await {
                tracing::error!(message = ?record.message_id, error = %e, "will be redelivered");
                if let Some(id) = record.message_id {
                    response.batch_item_failures.push(redeliver(id));
                }
            }
        }
        Ok(response)
    }
}
