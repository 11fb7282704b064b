//! `dispatch`: the SQS consumer that turns producer messages into pushes. It consumes two queues:
//! the dispatch queue (producer input, always validated) and the fan-out queue (its own page
//! jobs, which no producer can send).
//!
//! Per message: validate (a bad one goes to the DLQ with its reason and never blocks the batch),
//! apply a control message (subscribe, unsubscribe, cancel), or hand a notification to its
//! lifecycle (`services::notify`: defer, claim, log, fan out, escalate, push, finish) and an
//! internal-queue message to the same service. Only transient failures are reported back as
//! batch item failures, for redelivery.

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;

use crate::BoxError;
use crate::domain::config::Limits;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{ParseLimits, ProducerMessage, Rejection, parse_producer_message};
use crate::domain::policy::{PresencePolicy, RolePolicy};
use crate::io::delivery::Poster;
use crate::io::push::PushSender;
use crate::io::queue::{DEFERRED_FOR, InternalMessage, Queue, QueueError, redeliver};
use crate::io::store::Store;
use crate::services::chat::Receipts;
use crate::services::deps::Deps;
use crate::services::notify::{Internal, Notified, Notifier, NotifyError};
use crate::services::presence::Presence;
use crate::services::runtime::{Handler, InitError};
use crate::services::schedule::Scheduler;
use crate::services::web_push::Pusher;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// What happened to one message, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A producer notification, through its lifecycle.
    Notified(Notified),
    /// A message Herald put on its internal queue.
    Internal(Internal),
    Rejected(String),
    Controlled,
}

pub struct Dispatch {
    queue: Queue,
    notifier: Notifier,
    limits: Limits,
}

impl Dispatch {
    pub fn new(
        store: Store,
        queue: Queue,
        poster: Poster,
        scheduler: Scheduler,
        limits: Limits,
        roles: RolePolicy,
        presence: PresencePolicy,
    ) -> Self {
        let presence = Presence::new("dispatch", store.clone(), queue.clone(), poster.clone(), presence, &limits);
        Self {
            notifier: Notifier::new(store, queue.clone(), poster, scheduler, limits.clone(), roles, presence),
            queue,
            limits,
        }
    }

    /// Web Push with this sender (`None`: off).
    pub fn with_push(mut self, sender: Option<PushSender>) -> Self {
        self.notifier = self.notifier.with_push(sender);
        self
    }

    /// Chat receipt flushes with this service.
    pub fn with_receipts(mut self, receipts: Receipts) -> Self {
        self.notifier = self.notifier.with_receipts(receipts);
        self
    }

    pub async fn batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let results: Vec<(Option<String>, Result<Outcome, DispatchError>)> = futures_util::stream::iter(event.records)
            .map(|record| async move {
                // Kept invisible while worked on, one lease at a time (see `Queue::hold`).
                let lease = self.limits.claim_lease_seconds;
                let result = self.queue.hold_record(&record, lease, self.message(&record)).await;
                if let Err(DispatchError::Notify(e)) = &result
                    && let Some(lease_left_ms) = e.lease_left_ms()
                {
                    self.queue.retry_after_lease(&record, lease_left_ms).await;
                }
                (record.message_id, result)
            })
            .buffer_unordered(10)
            .collect()
            .await;
        let mut response = SqsBatchResponse::default();
        for (id, result) in results {
            match result {
                Ok(outcome) => tracing::debug!(message = ?id, ?outcome, "processed"),
                Err(e) => {
                    tracing::error!(message = ?id, error = %e, "will be redelivered");
                    if let Some(id) = id {
                        response.batch_item_failures.push(redeliver(id));
                    }
                }
            }
        }
        response
    }

    /// One SQS message. `Err` means transient: the message is redelivered.
    pub async fn message(&self, record: &SqsMessage) -> Result<Outcome, DispatchError> {
        let body = record.body.as_deref().unwrap_or_default();
        // Fan-out jobs come only from their own queue, which only dispatch sends to. Anything on
        // the dispatch queue is producer input, however it looks: a forged job is malformed.
        if record
            .event_source_arn
            .as_deref()
            .is_some_and(|arn| self.queue.is_fanout_source(arn))
        {
            return match serde_json::from_str::<InternalMessage>(body) {
                Ok(message) => Ok(Outcome::Internal(self.notifier.internal(message).await?)),
                Err(_) => {
                    tracing::error!(message = ?record.message_id, body_len = body.len(), "internal queue message is not Herald's; dropped");
                    Ok(Outcome::Rejected("malformed_job".into()))
                }
            };
        }
        let limits = ParseLimits::from(&self.limits);
        match parse_producer_message(body, limits) {
            Err(rejection) => self.reject(record, &rejection).await,
            Ok(ProducerMessage::Control(c)) => {
                self.notifier.control(c).await?;
                Ok(Outcome::Controlled)
            }
            Ok(ProducerMessage::Notify(mut req)) => {
                // Without a producer id, the SQS message id is the idempotency key: a redelivery
                // of the same message carries the same id.
                if req.id.is_none() {
                    req.id = record.message_id.clone();
                }
                let deferred_for = record.message_attributes.get(DEFERRED_FOR).and_then(|a| a.string_value.clone());
                Ok(Outcome::Notified(self.notifier.notify(req, deferred_for).await?))
            }
        }
    }

    async fn reject(&self, record: &SqsMessage, rejection: &Rejection) -> Result<Outcome, DispatchError> {
        self.queue
            .dead_letter(
                record.body.clone().unwrap_or_default(),
                rejection.code.as_str(),
                &truncate(&rejection.to_string(), 1024),
                record.message_id.as_deref(),
            )
            .await?;
        tracing::warn!(message = ?record.message_id, reason = rejection.code.as_str(), detail = %rejection, "rejected to the dead-letter queue");
        Metrics::new("dispatch")
            .with_dimension("Reason", rejection.code.as_str())
            .count("Rejected", 1)
            .flush();
        Ok(Outcome::Rejected(rejection.code.as_str().to_owned()))
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.char_indices().take_while(|(i, _)| *i < max).map(|(_, c)| c).collect()
}

impl Handler for Dispatch {
    type Event = SqsEvent;
    type Output = SqsBatchResponse;
    const NAME: &'static str = "dispatch";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        Ok(Self::new(
            d.store()?,
            d.queue()?,
            d.poster()?,
            d.scheduler()?,
            d.limits()?,
            d.roles()?,
            d.presence_policy()?,
        )
        .with_push(Pusher::sender(&d.push_settings()?)?)
        .with_receipts(d.receipts(Self::NAME)?))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        Ok(self.batch(event).await)
    }
}
