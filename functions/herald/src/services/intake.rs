//! What `dispatch` does with a batch of SQS records from its two queues: the dispatch queue
//! (producer input, always validated) and the internal queue (Herald's own fan-out jobs, presence
//! and escalation checks, which no producer can send).
//!
//! Per message: validate (a bad one goes to the DLQ with its reason and never blocks the batch),
//! apply a control message (subscribe, unsubscribe, cancel), or hand a notification to its
//! lifecycle (`notify`) and an internal message to the same service. Only transient failures are
//! reported back as batch item failures, for redelivery.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;

use crate::domain::config::Limits;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{Change, ParseLimits, ProducerMessage, RejectCode, Rejection, not_found, parse_producer_message};
use crate::io::queue::{DEFERRED_FOR, InternalMessage, Queue, QueueError, redeliver};
use crate::io::store::NotRevised;
use crate::services::inbox::{InboxError, Revised};
use crate::services::notify::{Internal, Notified, Notifier, NotifyError};

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Revision(#[from] InboxError),
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
    /// A producer's update or recall: done, or refused as stale or already recalled.
    Revised(Revised),
}

pub struct Intake {
    queue: Queue,
    notifier: Notifier,
    limits: Limits,
}

impl Intake {
    pub fn new(notifier: Notifier, queue: Queue, limits: Limits) -> Self {
        Self { queue, notifier, limits }
    }

    pub async fn batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let results: Vec<(Option<String>, Result<Outcome, IntakeError>)> = futures_util::stream::iter(event.records)
            .map(|record| async move {
                // Kept invisible while worked on, one lease at a time (see `Queue::hold`).
                let lease = self.limits.claim_lease_seconds;
                let result = self.queue.hold_record(&record, lease, self.message(&record)).await;
                if let Err(IntakeError::Notify(e)) = &result
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
    pub async fn message(&self, record: &SqsMessage) -> Result<Outcome, IntakeError> {
        let body = record.body.as_deref().unwrap_or_default();
        // Fan-out jobs come only from their own queue, which only dispatch sends to. Anything on
        // the dispatch queue is producer input, however it looks: a forged job is malformed.
        if record
            .event_source_arn
            .as_deref()
            .is_some_and(|arn| self.queue.is_internal_source(arn))
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
            Ok(ProducerMessage::Revise(r)) => match self.notifier.revise(&r).await? {
                Revised::Refused(NotRevised::NotFound) => {
                    let field = if matches!(r.change, Change::Recall) { "recall" } else { "update" };
                    self.reject(
                        record,
                        &not_found(field, format!("no notification {:?} of tenant {:?} to change", r.id, r.tenant)),
                    )
                    .await
                }
                Revised::Refused(NotRevised::InProgress) => Err(IntakeError::Revision(InboxError::InProgress)),
                Revised::TooLarge { size, budget } => {
                    let rejection = Rejection {
                        code: RejectCode::TooLarge,
                        field: "message".into(),
                        reason: format!("the updated frame is {size} bytes; the budget is {budget}"),
                    };
                    self.reject(record, &rejection).await
                }
                revised => Ok(Outcome::Revised(revised)),
            },
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

    async fn reject(&self, record: &SqsMessage, rejection: &Rejection) -> Result<Outcome, IntakeError> {
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
