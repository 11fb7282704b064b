//! Every message Herald sends to SQS, in one place: producer messages put back on the dispatch
//! queue (deferred delivery, a fired reminder, `POST /notifications`), fan-out page jobs on their
//! own queue, retries with backoff (posts and Web Pushes), and rejected messages on the dead-letter queue with their
//! reason.
//!
//! Handlers say *what* they send (`dispatch`, `fanout_job`, `retry`, `dead_letter`); the queue
//! URL, the body's encoding, chunking and delays are decided here, so no handler holds an SQS
//! client or builds a message by hand.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{BatchItemFailure, SqsMessage};
use aws_sdk_sqs::error::{BuildError, DisplayErrorContext, SdkError};
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use aws_sdk_sqs::operation::send_message::SendMessageError;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::domain::config::Queues;

mod messages;

pub use messages::{
    CollapseRef, EscalationCheck, FanoutJob, InternalMessage, PresenceCheck, PushJob, PushLater, PushRetry, ReceiptFlush, RetryJob,
    retry_delay_seconds,
};

/// The message attribute of a deferred copy: the `deliverAt` it was deferred for.
pub const DEFERRED_FOR: &str = "deferredFor";

/// SQS's largest delay: longer waits go through EventBridge Scheduler.
pub const MAX_DELAY_SECONDS: i64 = 900;

/// SQS's longest visibility timeout.
const MAX_VISIBILITY_SECONDS: u64 = 43_200;

/// Connection ids per retry message: far below SQS's 256 KB even with a 32 KB frame.
const RETRY_CHUNK: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The source is kept for callers that walk the chain; the message carries the SDK's
    /// context too, because Lambda logs usually print only the top-level error. Boxed: the SDK
    /// error is a few hundred bytes, and every `Result` that can hold it would pay for them.
    #[error("sending to the {queue} queue failed: {}", DisplayErrorContext(.source.as_ref()))]
    Send {
        queue: &'static str,
        #[source]
        source: Box<SdkError<SendMessageError>>,
    },
    #[error("changing the visibility of a message of the {queue} queue failed: {}", DisplayErrorContext(.source.as_ref()))]
    Visibility {
        queue: &'static str,
        #[source]
        source: Box<SdkError<ChangeMessageVisibilityError>>,
    },
    #[error("message attribute {name} is invalid: {source}")]
    Attribute {
        name: &'static str,
        #[source]
        source: BuildError,
    },
    #[error("a {what} message could not be encoded: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Herald's queues and the SQS client that sends to them. Cheap to clone (the SDK client is
/// reference-counted), built once at init.
#[derive(Clone, Debug)]
pub struct Queue {
    sqs: aws_sdk_sqs::Client,
    urls: Queues,
}

impl Queue {
    pub fn new(sdk: &SdkConfig, urls: Queues) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(sdk),
            urls,
        }
    }

    /// A producer message for dispatch, optionally delayed (≤ [`MAX_DELAY_SECONDS`]).
    pub async fn dispatch(&self, body: String, delay_seconds: i64) -> Result<(), QueueError> {
        self.delayed_dispatch(body, delay_seconds, Vec::new()).await
    }

    /// A deferred notification, back on the dispatch queue with its delay. `deferredFor` carries
    /// the delivery time it was deferred for: if the notification is moved meanwhile (the same id
    /// sent again with another `deliverAt`), dispatch recognises this copy as superseded.
    pub async fn dispatch_deferred(&self, body: String, delay_seconds: i64, deliver_at: &str) -> Result<(), QueueError> {
        let attributes = vec![(DEFERRED_FOR, attribute(DEFERRED_FOR, deliver_at)?)];
        self.delayed_dispatch(body, delay_seconds, attributes).await
    }

    /// The dispatch queue, with SQS's delay bound applied in one place.
    async fn delayed_dispatch(
        &self,
        body: String,
        delay_seconds: i64,
        attributes: Vec<(&'static str, MessageAttributeValue)>,
    ) -> Result<(), QueueError> {
        let delay = delay_seconds.clamp(0, MAX_DELAY_SECONDS) as i32;
        self.send("dispatch", &self.urls.dispatch, body, delay, attributes).await
    }

    /// The next page of a big audience, for another dispatch invocation. On its own queue, which
    /// only dispatch may send to: nothing a producer sends is ever taken for a job.
    pub async fn fanout_job(&self, job: &FanoutJob) -> Result<(), QueueError> {
        let body = serde_json::to_string(job).map_err(|source| QueueError::Encode {
            what: "fan-out job",
            source,
        })?;
        self.send("internal", &self.urls.internal, body, 0, Vec::new()).await
    }

    /// Runs `work` on a received message and keeps the message invisible until it is done:
    /// every half `lease_seconds` its visibility is set to two leases from now. If the process
    /// dies, the message comes back within two leases. The first extension is half a lease in:
    /// the queue's own visibility timeout must be longer (the template's 360 s, the test stack's
    /// 10 s, against 45 s and 2.5 s). Best effort: a failed extension is logged, and the
    /// previous one (or the queue's own timeout) applies.
    pub async fn hold<T>(&self, event_source_arn: &str, receipt_handle: &str, lease_seconds: u64, work: impl Future<Output = T>) -> T {
        let lease = lease_seconds.max(1);
        let period = Duration::from_millis(lease * 500);
        let extend = async {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            // After a stall, one extension now is enough; no burst of the missed ones.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = self.set_visibility(event_source_arn, receipt_handle, 2 * lease).await {
                    tracing::warn!(error = %e, "could not extend a message's visibility");
                }
            }
        };
        // Polled side by side: the work goes on while an extension is in flight (a slow SQS
        // answer must not pause a fan-out), and its end drops the extension, in flight or not.
        let (work, extend) = (std::pin::pin!(work), std::pin::pin!(extend));
        match futures_util::future::select(work, extend).await {
            futures_util::future::Either::Left((out, _)) => out,
            futures_util::future::Either::Right(((), work)) => work.await,
        }
    }

    /// [`Queue::hold`] for an SQS record of the event, when it names its queue and receipt.
    /// A slow invocation (a big fan-out job on a busy machine, a throttled table) would
    /// otherwise see its message delivered again while it still works, once the queue's
    /// visibility timeout runs out; that copy finds the claim's lease over and takes it, so the
    /// page is posted twice, and the extra work pushes other jobs the same way.
    pub async fn hold_record<T>(&self, record: &SqsMessage, lease_seconds: u64, work: impl Future<Output = T>) -> T {
        match (record.event_source_arn.as_deref(), record.receipt_handle.as_deref()) {
            (Some(arn), Some(receipt)) => self.hold(arn, receipt, lease_seconds, work).await,
            _ => work.await,
        }
    }

    /// Brings a record whose claim another invocation holds back when that claim's lease ends,
    /// not after the queue's visibility timeout: when the timeout is shorter than the lease (the
    /// local stack's few seconds; an operator's setting), each early receive would fail again and
    /// count toward the dead-letter queue, and a crash could send a notification there. Best
    /// effort: if this fails, the queue's own timeout applies.
    pub async fn retry_after_lease(&self, record: &SqsMessage, lease_left_ms: u64) {
        let (Some(arn), Some(receipt)) = (record.event_source_arn.as_deref(), record.receipt_handle.as_deref()) else {
            return;
        };
        // A second past the lease, so the next receive finds it over.
        let seconds = lease_left_ms.div_ceil(1000) + 1;
        if let Err(e) = self.set_visibility(arn, receipt, seconds).await {
            tracing::warn!(message = ?record.message_id, error = %e, "could not postpone the redelivery; the queue's visibility timeout applies");
        }
    }

    /// Makes a received message (from the dispatch or the internal queue, by the record's
    /// `eventSourceARN`) visible again only after `seconds` from now (SQS's
    /// ChangeMessageVisibility, at most 12 hours): to keep it while it is being worked on, or
    /// to retry it when that can succeed.
    pub async fn set_visibility(&self, event_source_arn: &str, receipt_handle: &str, seconds: u64) -> Result<(), QueueError> {
        let (queue, url) = if self.is_internal_source(event_source_arn) {
            ("internal", &self.urls.internal)
        } else {
            ("dispatch", &self.urls.dispatch)
        };
        self.sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.min(MAX_VISIBILITY_SECONDS) as i32)
            .send()
            .await
            .map_err(|e| QueueError::Visibility {
                queue,
                source: Box::new(e),
            })?;
        Ok(())
    }

    /// A presence check, after the grace period, on the same internal queue as fan-out jobs
    /// (which producers cannot send to).
    pub async fn presence_check(&self, check: &PresenceCheck, delay_seconds: u64) -> Result<(), QueueError> {
        let body = serde_json::to_string(check).map_err(|source| QueueError::Encode {
            what: "presence check",
            source,
        })?;
        let delay = delay_seconds.min(MAX_DELAY_SECONDS as u64) as i32;
        self.send("internal", &self.urls.internal, body, delay, Vec::new()).await
    }

    /// A receipt flush (see `services::chat`), a second later, on the internal queue: the
    /// trailing push of a member's receipts that came faster than one a second.
    pub async fn receipt_flush(&self, flush: &ReceiptFlush, delay_seconds: u64) -> Result<(), QueueError> {
        let body = serde_json::to_string(flush).map_err(|source| QueueError::Encode {
            what: "receipt flush",
            source,
        })?;
        let delay = delay_seconds.min(MAX_DELAY_SECONDS as u64) as i32;
        self.send("internal", &self.urls.internal, body, delay, Vec::new()).await
    }

    /// An escalation check, delayed until it is due (at most [`MAX_DELAY_SECONDS`]), on the
    /// internal queue like presence checks: producers cannot send there, so nobody can forge
    /// one and have Herald email a user an arbitrary text.
    pub async fn escalation_check(&self, check: &EscalationCheck, delay_seconds: u64) -> Result<(), QueueError> {
        let body = serde_json::to_string(check).map_err(|source| QueueError::Encode {
            what: "escalation check",
            source,
        })?;
        let delay = delay_seconds.min(MAX_DELAY_SECONDS as u64) as i32;
        self.send("internal", &self.urls.internal, body, delay, Vec::new()).await
    }

    /// An unread notification past its deadline, for the operator's worker.
    pub async fn escalate(&self, body: String) -> Result<(), QueueError> {
        self.send("escalation", &self.urls.escalation, body, 0, Vec::new()).await
    }

    /// Whether an SQS record came from the internal queue (by its `eventSourceARN`).
    pub fn is_internal_source(&self, event_source_arn: &str) -> bool {
        self.urls.is_internal_source(event_source_arn)
    }

    /// Connections to try again, delayed by the job's attempt (exponential backoff with jitter).
    pub async fn retry(&self, job: &RetryJob) -> Result<(), QueueError> {
        let delay = retry_delay_seconds(job.attempt);
        for chunk in job.connections.chunks(RETRY_CHUNK) {
            let part = RetryJob {
                connections: chunk.to_vec(),
                rows: job.rows.iter().filter(|r| chunk.contains(&r.connection)).cloned().collect(),
                ..job.clone()
            };
            let body = serde_json::to_string(&part).map_err(|source| QueueError::Encode { what: "retry", source })?;
            self.send("retry", &self.urls.retry, body, delay, Vec::new()).await?;
        }
        Ok(())
    }

    /// A push to try again on the retry queue, delayed by its attempt like post retries.
    /// A push to try again after the backoff of its attempt, or after `at_least` seconds (the
    /// push service's `Retry-After`) when that is longer, up to SQS's 15-minute delay.
    pub async fn push_retry(&self, job: &PushJob, at_least: Option<u32>) -> Result<(), QueueError> {
        let body = serde_json::to_string(&PushRetry { push: job.clone() }).map_err(|source| QueueError::Encode {
            what: "push retry",
            source,
        })?;
        let asked = at_least.map_or(0, |s| s.min(MAX_DELAY_SECONDS as u32) as i32);
        let delay = retry_delay_seconds(job.attempt).max(asked);
        self.send("retry", &self.urls.retry, body, delay, Vec::new()).await
    }

    /// A message that can never succeed, kept unchanged on the dead-letter queue with why
    /// (`reason`, a code; `detail`, for people) and the SQS id it came in as.
    pub async fn dead_letter(&self, body: String, reason: &str, detail: &str, source_message_id: Option<&str>) -> Result<(), QueueError> {
        let mut attributes = vec![("reason", attribute("reason", reason)?), ("detail", attribute("detail", detail)?)];
        if let Some(id) = source_message_id {
            attributes.push(("sourceMessageId", attribute("sourceMessageId", id)?));
        }
        self.send("dead-letter", &self.urls.dispatch_dlq, body, 0, attributes).await
    }

    async fn send(
        &self,
        queue: &'static str,
        url: &str,
        body: String,
        delay_seconds: i32,
        attributes: Vec<(&'static str, MessageAttributeValue)>,
    ) -> Result<(), QueueError> {
        let mut send = self.sqs.send_message().queue_url(url).message_body(body);
        if delay_seconds > 0 {
            send = send.delay_seconds(delay_seconds);
        }
        for (name, value) in attributes {
            send = send.message_attributes(name, value);
        }
        send.send().await.map_err(|e| QueueError::Send {
            queue,
            source: Box::new(e),
        })?;
        Ok(())
    }
}

fn attribute(name: &'static str, value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|source| QueueError::Attribute { name, source })
}

/// The batch-response entry that makes SQS redeliver one message (`ReportBatchItemFailures`).
pub fn redeliver(message_id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    failure
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use tokio::sync::Notify;

    use super::*;

    /// An SQS endpoint that takes every call and never answers: it only tells that it was called.
    #[derive(Debug, Clone, Default)]
    struct SilentSqs {
        called: Arc<Notify>,
    }

    impl HttpConnector for SilentSqs {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            self.called.notify_one();
            HttpConnectorFuture::new(std::future::pending())
        }
    }

    impl HttpClient for SilentSqs {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    /// The work goes on while an extension is in flight, and the hold ends with the work: a hold
    /// that awaited each extension before polling the work again paused every fan-out job for
    /// as long as SQS took to answer (on a busy machine, seconds per extension). Here SQS never
    /// answers and the work ends only once an extension is under way, so such a hold never
    /// returns (the 60 s bound turns that into a failure).
    #[tokio::test]
    async fn the_work_ends_while_an_extension_is_in_flight() {
        let sqs = SilentSqs::default();
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            )))
            .http_client(SharedHttpClient::new(sqs.clone()))
            // The call stays in flight: no default timeout, retry or stall detection ends it.
            .timeout_config(aws_config::timeout::TimeoutConfig::disabled())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .stalled_stream_protection(aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled())
            .build();
        let queue = Queue::new(
            &sdk,
            Queues {
                dispatch: String::new(),
                dispatch_dlq: String::new(),
                internal: "https://sqs.us-east-1.amazonaws.com/123456789012/internal".to_owned(),
                retry: String::new(),
                escalation: String::new(),
            },
        );
        let work = async {
            sqs.called.notified().await;
            "done"
        };
        let held = queue.hold("arn:aws:sqs:us-east-1:123456789012:internal", "receipt", 1, work);
        let ended = tokio::time::timeout(Duration::from_secs(60), held).await;
        assert_eq!(ended, Ok("done"), "the hold waited for the extension");
    }
}
