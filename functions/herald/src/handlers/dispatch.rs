//! `dispatch`: the SQS consumer that turns producer messages into pushes. It consumes two queues:
//! the dispatch queue (producer input, always validated) and the fan-out queue (its own page
//! jobs, which no producer can send).
//!
//! Per message: validate (a bad one goes to the DLQ with its reason and never blocks the batch);
//! claim its id (idempotency: a finished one is skipped; a redelivery after a crash takes over);
//! write the log entry **before** any push; resolve recipients by Query (never Scan); fan out
//! with bounded concurrency; 410 → clean up at once; 429/5xx → retry queue with backoff; big
//! audiences → fan-out page jobs on the fan-out queue so several invocations post in parallel;
//! `deliverAt` in the future → SQS delay (≤ 15 min) or a one-time Scheduler schedule.
//! Only transient failures are reported back as batch item failures, for redelivery.

use std::time::Instant;

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use futures_util::StreamExt;

use crate::BoxError;
use crate::domain::config::{Env, Limits, PushSettings, Queues, Scheduling, ws_endpoint};
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{Control, NotificationRequest, ParseLimits, ProducerMessage, Rejection, parse_producer_message};
use crate::domain::policy::{PresencePolicy, RolePolicy};
use crate::io::delivery::Poster;
use crate::io::push::PushSender;
use crate::io::queue::{DEFERRED_FOR, InternalMessage, Queue, QueueError, redeliver};
use crate::io::store::{ReminderState, Store, StoreError, epoch_seconds};
use crate::services::broadcast::{BroadcastError, Broadcaster, FanoutSummary, Logged, Outgoing, Reach};
use crate::services::escalation::{Escalation, EscalationError, Fired};
use crate::services::membership::Unsubscriber;
use crate::services::presence::{Presence, PresenceError};
use crate::services::runtime::{Handler, InitError};
use crate::services::schedule::{DeferError, Deferral, Deferred, Scheduler};
use crate::services::web_push::{PushError, PushSummary, Pusher, UserPush};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Defer(#[from] DeferError),
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Escalation(#[from] EscalationError),
}

impl DispatchError {
    /// How long until another invocation's claim on this work ends, when that is the failure.
    fn lease_left_ms(&self) -> Option<u64> {
        match self {
            DispatchError::Broadcast(BroadcastError::InProgress { lease_left_ms })
            | DispatchError::Escalation(EscalationError::InProgress { lease_left_ms }) => Some(*lease_left_ms),
            _ => None,
        }
    }
}

/// What happened to one message, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(FanoutSummary),
    Duplicate,
    Deferred,
    Cancelled,
    /// A deferred copy whose notification was moved to another time.
    Superseded,
    Rejected(String),
    Controlled,
    Shard(FanoutSummary),
    /// A presence check after a departure's grace period.
    Presence,
    /// An escalation check at (or before) its deadline.
    Escalation(Fired),
}

pub struct Dispatch {
    presence: Presence,
    store: Store,
    queue: Queue,
    broadcaster: Broadcaster,
    deferral: Deferral,
    unsubscriber: Unsubscriber,
    escalation: Escalation,
    pusher: Pusher,
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
        let escalation = Escalation::new("dispatch", store.clone(), queue.clone(), scheduler.clone(), &limits);
        let deferral = Deferral::new(store.clone(), queue.clone(), scheduler, limits.retention_seconds);
        let presence = Presence::new("dispatch", store.clone(), queue.clone(), poster.clone(), presence, &limits);
        Self {
            // Off until `with_push` gives it a sender.
            pusher: Pusher::new(store.clone(), queue.clone(), None, limits.retry_max_attempts),
            unsubscriber: Unsubscriber::new(store.clone(), poster.clone(), roles, presence.clone()),
            broadcaster: Broadcaster::new(store.clone(), queue.clone(), poster, limits.clone(), presence.clone()),
            presence,
            store,
            queue,
            deferral,
            escalation,
            limits,
        }
    }

    /// Web Push with this sender (`None`: off).
    pub fn with_push(mut self, sender: Option<PushSender>) -> Self {
        self.pusher = Pusher::new(self.store.clone(), self.queue.clone(), sender, self.limits.retry_max_attempts);
        self
    }

    pub async fn batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let results: Vec<(Option<String>, Result<Outcome, DispatchError>)> = futures_util::stream::iter(event.records)
            .map(|record| async move {
                let result = self.holding(&record, self.message(&record)).await;
                if let Some(lease_left_ms) = result.as_ref().err().and_then(DispatchError::lease_left_ms) {
                    self.retry_when_lease_ends(&record, lease_left_ms).await;
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

    /// Runs `work` on `record`, keeping the message invisible meanwhile ([`Queue::hold`], one
    /// lease at a time). A slow invocation (a big fan-out job on a busy machine, a throttled
    /// table) would otherwise see its message delivered again while it still works, once the
    /// queue's visibility timeout runs out; that copy finds the claim's lease over and takes it,
    /// so the page is posted twice, and the extra work pushes other jobs the same way. If the
    /// invocation dies, the message is back within two leases and finds the lease over.
    async fn holding<T>(&self, record: &SqsMessage, work: impl Future<Output = T>) -> T {
        match (record.event_source_arn.as_deref(), record.receipt_handle.as_deref()) {
            (Some(arn), Some(receipt)) => self.queue.hold(arn, receipt, self.limits.claim_lease_seconds, work).await,
            _ => work.await,
        }
    }

    /// A message whose claim another invocation holds comes back when that claim's lease ends,
    /// not after the queue's visibility timeout: when the timeout is shorter than the lease (the
    /// local stack's few seconds; an operator's setting), each early receive would fail again and
    /// count toward the dead-letter queue, and a crash could send a notification there. Best
    /// effort: if this fails, the queue's own timeout applies.
    async fn retry_when_lease_ends(&self, record: &SqsMessage, lease_left_ms: u64) {
        let (Some(arn), Some(receipt)) = (record.event_source_arn.as_deref(), record.receipt_handle.as_deref()) else {
            return;
        };
        // A second past the lease, so the next receive finds it over.
        let seconds = lease_left_ms.div_ceil(1000) + 1;
        if let Err(e) = self.queue.set_visibility(arn, receipt, seconds).await {
            tracing::warn!(message = ?record.message_id, error = %e, "could not postpone the redelivery; the queue's visibility timeout applies");
        }
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
            let job = match serde_json::from_str::<InternalMessage>(body) {
                Ok(InternalMessage::Job(job)) => job,
                Ok(InternalMessage::Presence(check)) => {
                    self.presence.check(&check).await?;
                    return Ok(Outcome::Presence);
                }
                Ok(InternalMessage::Escalation(check)) => {
                    return Ok(Outcome::Escalation(self.escalation.check(&check).await?));
                }
                Err(_) => {
                    tracing::error!(message = ?record.message_id, body_len = body.len(), "internal queue message is not Herald's; dropped");
                    return Ok(Outcome::Rejected("malformed_job".into()));
                }
            };
            let summary = self.broadcaster.run_job(&job).await?;
            Metrics::new("dispatch")
                .count("Delivered", summary.delivered)
                .count("Gone", summary.gone)
                .count("Retried", summary.retried)
                .count("Closed", summary.closed)
                .flush();
            return Ok(Outcome::Shard(summary));
        }
        let limits = ParseLimits {
            payload_budget: self.limits.payload_budget,
            retention_seconds: self.limits.retention_seconds,
            escalate_min_seconds: self.limits.escalate_min_seconds,
        };
        match parse_producer_message(body, limits) {
            Err(rejection) => self.reject(record, &rejection).await,
            Ok(ProducerMessage::Control(c)) => self.control(c).await.map(|_| Outcome::Controlled),
            Ok(ProducerMessage::Notify(mut req)) => {
                // Without a producer id, the SQS message id is the idempotency key: a redelivery
                // of the same message carries the same id.
                if req.id.is_none() {
                    req.id = record.message_id.clone();
                }
                let deferred_for = record.message_attributes.get(DEFERRED_FOR).and_then(|a| a.string_value.clone());
                self.notify(req, deferred_for).await
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

    async fn control(&self, control: Control) -> Result<(), DispatchError> {
        match control {
            Control::Subscribe { tenant, user, group } => self.store.subscriptions.subscribe(&tenant, &user, &group).await?,
            Control::Unsubscribe { tenant, user, group } => {
                self.unsubscriber.unsubscribe(&tenant, &user, &group).await?;
            }
            Control::Cancel { tenant, id } => self.cancel(&tenant, &id).await?,
        }
        Ok(())
    }

    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<(), DispatchError> {
        self.deferral.cancel(tenant, id).await?;
        Ok(())
    }

    /// `deferred_for`: set on Herald's own deferred copy, the `deliverAt` it was deferred for.
    async fn notify(&self, req: NotificationRequest, deferred_for: Option<String>) -> Result<Outcome, DispatchError> {
        let id = req.id.clone().unwrap_or_default();
        if let Some(at) = req.deliver_at {
            let wait = (at - Utc::now()).num_milliseconds();
            if wait > 1000 {
                return self.defer(req).await;
            }
            if let Some(r) = self.store.reminders.get(&req.tenant, &id).await? {
                if r.state == ReminderState::Cancelled {
                    Metrics::new("dispatch").count("Cancelled", 1).flush();
                    return Ok(Outcome::Cancelled);
                }
                // A delayed copy of an earlier `deliverAt`: the id was sent again with another
                // time, and the reminder record holds the newest. SQS cannot take back a delayed
                // message, so the copy is recognised here and dropped.
                if r.state == ReminderState::Scheduled && deferred_for.as_deref().is_some_and(|d| d != r.deliver_at) {
                    tracing::info!(tenant = %req.tenant, id = %id, deferred_for = ?deferred_for, now_for = %r.deliver_at, "superseded deferred copy dropped");
                    Metrics::new("dispatch").count("Superseded", 1).flush();
                    return Ok(Outcome::Superseded);
                }
            }
        }
        let started = Instant::now();
        let expires = epoch_seconds() + req.ttl_seconds.unwrap_or(self.limits.retention_seconds) as i64;
        let entries = match self
            .broadcaster
            .log(&req.tenant, &id, req.to.topics(), &req.content, expires)
            .await?
        {
            Logged::Duplicate(_) => {
                Metrics::new("dispatch").count("Duplicates", 1).flush();
                return Ok(Outcome::Duplicate);
            }
            Logged::Entries(entries) => entries,
        };
        let frames: Vec<Outgoing> = entries.iter().map(|(g, e)| Outgoing::entry(g.clone(), e)).collect();
        let summary = self.broadcaster.fan_out(&req.tenant, &id, &frames, Reach::default()).await?;
        // Before `finish`: a redelivery after a failure here finds the id unfinished and
        // schedules again (the once-guard at the deadline absorbs the second check).
        if let Some(after) = req.escalate_after {
            self.escalation.schedule(&req.tenant, &id, &entries, after).await?;
        }
        // Before `finish`: a crash in between pushes again on redelivery (at least once).
        let pushed = match req.push {
            Some(push) => {
                let users: Vec<UserPush> = entries
                    .iter()
                    .filter_map(|(topic, entry)| match topic {
                        Group::User(user) if push.always || summary.unreached.contains(user) => Some(UserPush { user, entry }),
                        _ => None,
                    })
                    .collect();
                let ttl = req.ttl_seconds.unwrap_or(self.limits.retention_seconds);
                self.pusher.push(&req.tenant, &id, &users, push, ttl).await?
            }
            None => PushSummary::default(),
        };
        self.broadcaster.finish(&req.tenant, &id, &summary).await?;
        if req.deliver_at.is_some() {
            self.store.reminders.mark_fired(&req.tenant, &id, expires).await?;
        }
        let mut m = Metrics::new("dispatch");
        m.count("Accepted", 1)
            .count("Delivered", summary.delivered)
            .count("Gone", summary.gone)
            .count("Retried", summary.retried)
            .count("Closed", summary.closed)
            .count("ShardsQueued", summary.shards_queued)
            .millis("FanoutDuration", started.elapsed().as_secs_f64() * 1000.0)
            .millis("PostingDuration", summary.posting_us as f64 / 1000.0)
            .flush();
        tracing::info!(tenant = %req.tenant, id = %id, delivered = summary.delivered, gone = summary.gone, retried = summary.retried, shards = summary.shards_queued, posting_us = summary.posting_us, pushed = pushed.delivered, push_retried = pushed.retried, push_gone = pushed.gone, "dispatched");
        Ok(Outcome::Delivered(summary))
    }

    async fn defer(&self, req: NotificationRequest) -> Result<Outcome, DispatchError> {
        let deferred = self.deferral.defer(&req, None).await?;
        tracing::info!(tenant = %req.tenant, id = ?req.id, ?deferred, "deferred");
        if deferred == Deferred::Cancelled {
            return Ok(Outcome::Cancelled);
        }
        Metrics::new("dispatch").count("Deferred", 1).flush();
        Ok(Outcome::Deferred)
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
        let store = Store::from_env(&sdk)?;
        let poster = Poster::new(&sdk, &ws_endpoint(&Env)?)?;
        let scheduler = Scheduler::new(&sdk, Scheduling::from_source(&Env)?);
        let sender = Pusher::sender(&PushSettings::from_source(&Env)?)?;
        Ok(Self::new(
            store,
            Queue::new(&sdk, Queues::from_source(&Env)?),
            poster,
            scheduler,
            Limits::from_source(&Env)?,
            RolePolicy::from_source(&Env)?,
            PresencePolicy::from_source(&Env)?,
        )
        .with_push(sender))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        Ok(self.batch(event).await)
    }
}
