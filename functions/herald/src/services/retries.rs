//! The retry queue's rounds: a frame posted again to the connections a fan-out could neither
//! reach (429, 5xx, timeouts) nor close, closing those that still cannot take it, and the Web
//! Pushes a push service refused for now. Each round that still fails is re-queued with a
//! longer, jittered delay; after the configured number of attempts it gives up and counts it.
//! Nothing is lost by giving up: the notification is in the log, and the client gets it from
//! `resume`/`missed` when it reconnects.

use crate::domain::config::Limits;
use crate::domain::cursor::now_millis;
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::policy::PresencePolicy;
use crate::io::delivery::{FanoutReport, Poster, close_gone_sockets, fan_out, post_or_close};
use crate::io::queue::{PushJob, Queue, QueueError, RetryJob};
use crate::io::store::{MemberRow, Store, StoreError};
use crate::services::presence::{Presence, PresenceError};
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

#[derive(Clone, Debug)]
pub struct Retries {
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
    /// A Web Push retried (`web_push`): pushed, removed, re-queued or given up.
    Pushed,
}

impl Retries {
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

    /// Sends a Web Push again (`web_push`): pushed, removed, re-queued or given up.
    pub async fn push(&self, job: PushJob) -> Result<RetryOutcome, RetryError> {
        self.pusher.retry(job).await?;
        Ok(RetryOutcome::Pushed)
    }

    /// Posts a frame again to the connections a fan-out (or an earlier round) could neither
    /// reach nor close.
    pub async fn posts(&self, job: RetryJob) -> Result<RetryOutcome, RetryError> {
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
        // Gone without a connection item: the rows that drew the posts are removed, as the first
        // fan-out removes them, or they would draw a post and a 410 on every notification.
        let stale: Vec<MemberRow> = job.rows.iter().filter(|r| gone.orphans.contains(&r.connection)).cloned().collect();
        self.store.connections.remove_rows(&stale).await?;
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
                    rows: job.rows.iter().filter(|r| report.retry.contains(&r.connection)).cloned().collect(),
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
