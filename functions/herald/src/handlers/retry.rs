//! `retry`: re-posts a frame to the connections a fan-out could neither reach (429, 5xx,
//! timeouts) nor close, closing those that still cannot take it, and sends again the Web Pushes
//! a push service refused for now (`offline`).
//! Each round that still fails is re-queued with a longer, jittered delay; after the configured
//! number of attempts it gives up and counts it. Nothing is lost by giving up: the notification
//! is in the log, and the client gets it from `resume`/`missed` when it reconnects.

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

use crate::BoxError;
use crate::domain::config::{Env, Limits, PushSettings, Queues, ws_endpoint};
use crate::domain::cursor::now_millis;
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::policy::PresencePolicy;
use crate::io::delivery::{FanoutReport, Poster, close_gone_sockets, fan_out, post_or_close};
use crate::io::queue::{PushRetry, Queue, QueueError, RetryJob, redeliver};
use crate::io::store::{Store, StoreError};
use crate::services::presence::{Presence, PresenceError};
use crate::services::runtime::{Handler, InitError};
use crate::services::web_push::{PushError, Pusher};

/// A round that could not finish; the message is redelivered.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    Push(#[from] PushError),
}

pub struct Retry {
    store: Store,
    queue: Queue,
    poster: Poster,
    limits: Limits,
    presence: Presence,
    pusher: Pusher,
}

/// One retry round's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Posted (or cleaned up) everything that could be; `requeued` still pending.
    Done { delivered: usize, gone: usize, requeued: usize },
    /// Out of attempts for these connections.
    Abandoned { delivered: usize, abandoned: usize },
    /// Not a retry job: dropped with an error log (it can never succeed).
    Malformed,
    /// A latest-value stream's entry with a later one logged: the later one is what counts, so
    /// this one is not posted again.
    Superseded,
    /// A Web Push retried (`offline`): pushed, removed, re-queued or given up.
    Pushed,
}

impl Retry {
    pub fn new(store: Store, queue: Queue, poster: Poster, limits: Limits, presence: PresencePolicy, pusher: Pusher) -> Self {
        Self {
            pusher,
            presence: Presence::new("retry", store.clone(), queue.clone(), poster.clone(), presence, &limits),
            store,
            queue,
            poster,
            limits,
        }
    }

    pub async fn job(&self, body: &str) -> Result<RetryOutcome, RetryError> {
        // A push retry is `{"push": {...}}`, which never parses as a post retry.
        if let Ok(PushRetry { push }) = serde_json::from_str::<PushRetry>(body) {
            self.pusher.retry(push).await?;
            return Ok(RetryOutcome::Pushed);
        }
        let Ok(job) = serde_json::from_str::<RetryJob>(body) else {
            tracing::error!(body_len = body.len(), "retry message is not a retry job; dropped");
            Metrics::new("retry").count("Malformed", 1).flush();
            return Ok(RetryOutcome::Malformed);
        };
        if let Some(c) = &job.collapse
            && let Ok(topic) = Group::parse(&c.topic)
            && let Some(latest) = self.store.log.latest(&job.tenant, &topic, &c.key).await?
            && latest.to_string() > c.cursor
        {
            Metrics::new("retry").count("Superseded", 1).flush();
            return Ok(RetryOutcome::Superseded);
        }
        // These connections could not even be closed when the frame was young: they get it now,
        // or are closed now (see `delivery::post_or_close`).
        let mut report: FanoutReport = fan_out(&self.poster, job.connections.clone(), &job.frame, self.limits.fanout_concurrency).await;
        // Best effort, as in the first fan-out: nothing records this frame's completion.
        close_gone_sockets(&self.poster, &report.gone, self.limits.fanout_concurrency).await;
        let settled = post_or_close(
            &self.poster,
            std::mem::take(&mut report.retry),
            &job.frame,
            self.limits.fanout_concurrency,
        )
        .await;
        report.delivered += settled.delivered;
        report.gone.extend(settled.gone);
        report.retry = settled.unclosed;
        let gone = self.store.connections.close_gone(&report.gone, now_millis()).await?;
        self.presence.closed(&gone.closed).await?;
        let mut m = Metrics::new("retry");
        m.count("Delivered", report.delivered).count("Gone", report.gone.len());
        let outcome = if report.retry.is_empty() {
            RetryOutcome::Done {
                delivered: report.delivered,
                gone: report.gone.len(),
                requeued: 0,
            }
        } else if job.attempt >= self.limits.retry_max_attempts {
            tracing::warn!(tenant = %job.tenant, id = %job.id, connections = report.retry.len(), attempts = job.attempt, "giving up; the log still holds the notification");
            m.count("Abandoned", report.retry.len());
            RetryOutcome::Abandoned {
                delivered: report.delivered,
                abandoned: report.retry.len(),
            }
        } else {
            let requeued = report.retry.len();
            self.queue
                .retry(&RetryJob {
                    connections: report.retry,
                    attempt: job.attempt + 1,
                    ..job
                })
                .await?;
            m.count("Retried", requeued);
            RetryOutcome::Done {
                delivered: report.delivered,
                gone: report.gone.len(),
                requeued,
            }
        };
        m.flush();
        Ok(outcome)
    }
}

impl Handler for Retry {
    type Event = SqsEvent;
    type Output = SqsBatchResponse;
    const NAME: &'static str = "retry";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let store = Store::from_env(&sdk)?;
        let poster = Poster::new(&sdk, &ws_endpoint(&Env)?)?;
        let queue = Queue::new(&sdk, Queues::from_source(&Env)?);
        let limits = Limits::from_source(&Env)?;
        let pusher = Pusher::new(
            store.clone(),
            queue.clone(),
            Pusher::sender(&PushSettings::from_source(&Env)?)?,
            limits.retry_max_attempts,
        );
        Ok(Self::new(store, queue, poster, limits, PresencePolicy::from_source(&Env)?, pusher))
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
