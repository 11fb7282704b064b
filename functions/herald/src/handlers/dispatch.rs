//! `dispatch`: the SQS consumer that turns producer messages into pushes. It consumes two queues:
//! the dispatch queue (producer input, always validated) and the fan-out queue (its own page
//! jobs, which no producer can send).
//!
//! Per message: validate (a bad one goes to the DLQ with its reason and never blocks the batch);
//! claim its id (idempotency: a finished one is skipped; a redelivery after a crash takes over);
//! write the log entry **before** any push; resolve recipients by Query (never Scan); fan out
//! with bounded concurrency; 410 → clean up at once; 429/5xx → retry queue with backoff; big
//! audiences → walk and post jobs on the fan-out queue so several invocations post in parallel,
//! in a chain of at most eight hops (`delivery::chain`);
//! `deliverAt` in the future → SQS delay (≤ 15 min) or a one-time Scheduler schedule.
//! Only transient failures are reported back as batch item failures, for redelivery.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use aws_config::SdkConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use futures_util::StreamExt;

use crate::BoxError;
use crate::config::{Env, Limits, Queues, Scheduling, ws_endpoint};
use crate::cursor::{Cursor, now_millis};
use crate::delivery::{FanoutJob, FanoutReport, Poster, RetryJob, chain, fan_out};
use crate::groups::Group;
use crate::horizon::Horizon;
use crate::membership::Unsubscriber;
use crate::metrics::Metrics;
use crate::notification::{
    Control, LogEntry, NotificationRequest, ParseLimits, ProducerMessage, Rejection, format_time, now_rfc3339, parse_producer_message,
};
use crate::policy::RolePolicy;
use crate::queue::{DEFERRED_FOR, Queue, QueueError, redeliver};
use crate::runtime::{Handler, InitError};
use crate::schedule::{DeferError, Deferral, Deferred, Scheduler};
use crate::store::{Claim, ReminderState, Store, StoreError, epoch_seconds};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Defer(#[from] DeferError),
    #[error("another invocation is delivering this notification; retry in {lease_left_ms} ms")]
    InProgress { lease_left_ms: u64 },
    #[error("the log write kept landing behind the visibility horizon; retry later")]
    LateLog,
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutSummary {
    pub delivered: usize,
    pub gone: usize,
    pub retried: usize,
    pub failed: usize,
    pub shards_queued: usize,
    /// Time spent posting (excluding reads and writes of state), for the fan-out benchmark.
    pub posting_us: u64,
}

pub struct Dispatch {
    store: Store,
    horizon: Horizon,
    queue: Queue,
    poster: Poster,
    deferral: Deferral,
    unsubscriber: Unsubscriber,
    limits: Limits,
}

impl Dispatch {
    pub fn new(store: Store, queue: Queue, poster: Poster, scheduler: Scheduler, limits: Limits, roles: RolePolicy) -> Self {
        let deferral = Deferral::new(store.clone(), queue.clone(), scheduler, limits.retention_seconds);
        Self {
            unsubscriber: Unsubscriber::new(store.clone(), poster.clone(), roles),
            store,
            horizon: Horizon::default(),
            queue,
            poster,
            deferral,
            limits,
        }
    }

    pub async fn batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let results: Vec<(Option<String>, Result<Outcome, DispatchError>)> = futures_util::stream::iter(event.records)
            .map(|record| async move {
                let result = self.message(&record).await;
                if let Err(DispatchError::InProgress { lease_left_ms }) = &result {
                    self.retry_when_lease_ends(&record, *lease_left_ms).await;
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
        if let Err(e) = self.queue.retry_later(arn, receipt, seconds).await {
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
            let Ok(job) = serde_json::from_str::<FanoutJob>(body) else {
                tracing::error!(message = ?record.message_id, body_len = body.len(), "fan-out queue message is not a job; dropped");
                return Ok(Outcome::Rejected("malformed_job".into()));
            };
            return self.run_job(&job).await.map(Outcome::Shard);
        }
        let limits = ParseLimits {
            payload_budget: self.limits.payload_budget,
            retention_seconds: self.limits.retention_seconds,
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
        let lease_ms = self.limits.claim_lease_seconds * 1000;
        // The id is remembered longer than the entry lives: a producer retry or a DLQ redrive
        // after a short `ttlSeconds` is still a duplicate.
        let remembered = expires.max(epoch_seconds() + self.limits.dedupe_seconds as i64);
        let claimed = match self
            .store
            .idempotency
            .claim(&req.tenant, &id, Cursor::now(), remembered, lease_ms)
            .await?
        {
            Claim::Done(_) => {
                Metrics::new("dispatch").count("Duplicates", 1).flush();
                return Ok(Outcome::Duplicate);
            }
            Claim::InProgress { lease_left_ms } => return Err(DispatchError::InProgress { lease_left_ms }),
            Claim::New(c) | Claim::Unfinished(c) => c,
        };
        // The claim's time is the creation time, so a redelivery renders the same frame.
        let created_at = chrono::DateTime::<Utc>::from_timestamp_millis(claimed.millis() as i64)
            .map(|t| format_time(&t))
            .unwrap_or_else(now_rfc3339);
        // Nothing lost: the log is written before any push, and visible before any reader can
        // be handed a position past it (see `horizon`). A write that returned too late is written
        // again under a fresh cursor; the late copy is a duplicate that clients drop by id.
        let mut cursor = self.horizon.write_cursor(claimed, now_millis());
        let mut attempts = 0;
        let entries = loop {
            let entries = log_entries(&req, &id, cursor, &created_at);
            self.store.log.append(&req.tenant, &entries, expires).await?;
            if self.horizon.landed_now(cursor) {
                break entries;
            }
            attempts += 1;
            Metrics::new("dispatch").count("LateLogWrites", 1).flush();
            tracing::warn!(tenant = %req.tenant, id = %id, %cursor, attempts, "log write landed behind the horizon; writing again");
            if attempts >= MAX_LATE_WRITES {
                return Err(DispatchError::LateLog);
            }
            cursor = Cursor::now();
        };

        let summary = self.fan_out_entries(&req.tenant, &id, &entries).await?;
        self.store.idempotency.finish(&req.tenant, &id).await?;
        if req.deliver_at.is_some() {
            self.store.reminders.mark_fired(&req.tenant, &id, expires).await?;
        }
        let mut m = Metrics::new("dispatch");
        m.count("Accepted", 1)
            .count("Delivered", summary.delivered)
            .count("Gone", summary.gone)
            .count("Retried", summary.retried)
            .count("ShardsQueued", summary.shards_queued)
            .millis("FanoutDuration", started.elapsed().as_secs_f64() * 1000.0)
            .millis("PostingDuration", summary.posting_us as f64 / 1000.0)
            .flush();
        tracing::info!(tenant = %req.tenant, id = %id, delivered = summary.delivered, gone = summary.gone, retried = summary.retried, shards = summary.shards_queued, posting_us = summary.posting_us, "dispatched");
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

    /// Fans one notification out to every topic's live connections. Each membership shard's first
    /// page is posted here; the rest of a big group becomes shard jobs for other invocations.
    async fn fan_out_entries(&self, tenant: &str, id: &str, entries: &[(Group, LogEntry)]) -> Result<FanoutSummary, DispatchError> {
        let mut pages = Vec::new();
        for (topic, entry) in entries {
            let shards = topic.shards(self.limits.membership_shards);
            let first_page = (self.limits.fanout_shard_size / usize::from(shards)).max(1);
            for shard in 0..shards {
                pages.push((topic.key(tenant), shard, first_page, entry.frame(false)));
            }
        }
        let fetched: Vec<Result<_, StoreError>> = futures_util::stream::iter(pages)
            .map(|(key, shard, limit, frame)| async move {
                let page = self.store.connections.members_page(&key, shard, None, limit).await?;
                Ok((key, shard, frame, page))
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut summary = FanoutSummary::default();
        let mut by_frame: HashMap<String, Vec<String>> = HashMap::new();
        // Which membership rows each connection was read from, to remove them on a 410.
        let mut rows: HashMap<String, Vec<(String, u16)>> = HashMap::new();
        for result in fetched {
            let (key, shard, frame, page) = result?;
            for m in &page.members {
                rows.entry(m.connection_id.clone()).or_default().push((key.clone(), shard));
            }
            if let Some(after) = page.next {
                self.queue_job(FanoutJob {
                    tenant: tenant.to_owned(),
                    id: id.to_owned(),
                    group_key: key,
                    shard,
                    after: Some(after),
                    frame: frame.clone(),
                    connections: Vec::new(),
                })
                .await?;
                summary.shards_queued += 1;
            }
            by_frame
                .entry(frame)
                .or_default()
                .extend(page.members.into_iter().map(|m| m.connection_id));
        }
        let mut report = FanoutReport::default();
        for (frame, connections) in by_frame {
            let posting = Instant::now();
            let r = fan_out(&self.poster, connections, &frame, self.limits.fanout_concurrency).await;
            summary.posting_us += posting.elapsed().as_micros() as u64;
            // A set: one batch must not name a row twice.
            let mut stale: HashMap<(String, u16), BTreeSet<String>> = HashMap::new();
            for conn in &r.gone {
                for row in rows.get(conn).into_iter().flatten() {
                    stale.entry(row.clone()).or_default().insert(conn.clone());
                }
            }
            for ((key, shard), conns) in stale {
                let conns: Vec<String> = conns.into_iter().collect();
                self.store.connections.remove_members(&key, shard, &conns).await?;
            }
            self.settle(tenant, id, &frame, &r).await?;
            report.merge(r);
        }
        summary.delivered = report.delivered;
        summary.gone = report.gone.len();
        summary.retried = report.retry.len();
        summary.failed = report.failed;
        Ok(summary)
    }

    /// A job of a big audience (see [`chain`]): a walk reads part of a shard and splits it into
    /// post jobs, a post job posts to the connections it names. A job is claimed like a
    /// notification, so a redelivered job (visibility timeout, retry after a partial failure)
    /// does not post its page twice.
    async fn run_job(&self, job: &FanoutJob) -> Result<FanoutSummary, DispatchError> {
        let key = job.claim_key();
        let expires = epoch_seconds() + self.limits.retention_seconds as i64;
        match self
            .store
            .idempotency
            .claim(&job.tenant, &key, Cursor::MIN, expires, self.limits.claim_lease_seconds * 1000)
            .await?
        {
            Claim::Done(_) => return Ok(FanoutSummary::default()),
            Claim::InProgress { lease_left_ms } => return Err(DispatchError::InProgress { lease_left_ms }),
            Claim::New(_) | Claim::Unfinished(_) => {}
        }
        let mut summary = FanoutSummary::default();
        let page = if job.connections.is_empty() {
            let (page, queued) = self.walk(job).await?;
            summary.shards_queued = queued;
            page
        } else {
            job.connections.clone()
        };
        let report = fan_out(&self.poster, page, &job.frame, self.limits.fanout_concurrency).await;
        self.store
            .connections
            .remove_members(&job.group_key, job.shard, &report.gone)
            .await?;
        self.settle(&job.tenant, &job.id, &job.frame, &report).await?;
        self.store.idempotency.finish(&job.tenant, &key).await?;
        summary.delivered = report.delivered;
        summary.gone = report.gone.len();
        summary.retried = report.retry.len();
        summary.failed = report.failed;
        Metrics::new("dispatch")
            .count("Delivered", summary.delivered)
            .count("Gone", summary.gone)
            .count("Retried", summary.retried)
            .flush();
        Ok(summary)
    }

    /// Reads up to a walk's budget of the shard after `job.after`; queues the next walk first (so
    /// it proceeds in parallel), then a post job per page but the first, which it returns for
    /// this invocation to post. Returns that page and how many jobs it queued.
    async fn walk(&self, job: &FanoutJob) -> Result<(Vec<String>, usize), DispatchError> {
        let budget = chain::walk_budget(self.limits.membership_shards);
        let mut read = Vec::new();
        let mut position = job.after.clone();
        loop {
            let limit = chain::WALK_QUERY_LIMIT.min(budget - read.len());
            let page = self
                .store
                .connections
                .members_page(&job.group_key, job.shard, position.as_deref(), limit)
                .await?;
            read.extend(page.members.into_iter().map(|m| m.connection_id));
            position = page.next;
            if position.is_none() || read.len() >= budget {
                break;
            }
        }
        let mut queued = 0;
        if position.is_some() {
            self.queue_job(FanoutJob {
                after: position,
                connections: Vec::new(),
                ..job.clone()
            })
            .await?;
            queued += 1;
        }
        let page_size = self.limits.fanout_shard_size.max(1);
        let mut pages = read.chunks(page_size);
        let own = pages.next().map(<[String]>::to_vec).unwrap_or_default();
        let posts: Vec<FanoutJob> = pages
            .map(|connections| FanoutJob {
                connections: connections.to_vec(),
                ..job.clone()
            })
            .collect();
        queued += posts.len();
        let sent: Vec<Result<(), DispatchError>> = futures_util::stream::iter(posts)
            .map(|post| async move { self.queue_job(post).await })
            .buffer_unordered(JOB_SENDS_IN_FLIGHT)
            .collect()
            .await;
        sent.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok((own, queued))
    }

    async fn queue_job(&self, job: FanoutJob) -> Result<(), DispatchError> {
        Ok(self.queue.fanout_job(&job).await?)
    }

    /// Acts on a fan-out's failures: gone connections are removed now, retryable ones go to the
    /// retry queue with only their ids.
    async fn settle(&self, tenant: &str, id: &str, frame: &str, report: &FanoutReport) -> Result<(), DispatchError> {
        self.store.connections.close_all(&report.gone).await?;
        if !report.retry.is_empty() {
            self.queue
                .retry(&RetryJob {
                    tenant: tenant.to_owned(),
                    id: id.to_owned(),
                    frame: frame.to_owned(),
                    connections: report.retry.clone(),
                    attempt: 1,
                })
                .await?;
        }
        Ok(())
    }
}

/// Log writes in a row that may land too late before the message is left for redelivery.
const MAX_LATE_WRITES: u32 = 3;

/// Post jobs a walk sends at once (one SendMessage each).
const JOB_SENDS_IN_FLIGHT: usize = 16;

/// One log entry per topic of the notification, all under `cursor`.
fn log_entries(req: &NotificationRequest, id: &str, cursor: Cursor, created_at: &str) -> Vec<(Group, LogEntry)> {
    req.to
        .topics()
        .into_iter()
        .map(|topic| {
            let entry = LogEntry {
                id: id.to_owned(),
                cursor,
                topic: topic.to_string(),
                content: req.content.clone(),
                created_at: created_at.to_owned(),
            };
            (topic, entry)
        })
        .collect()
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
        Ok(Self::new(
            store,
            Queue::new(&sdk, Queues::from_source(&Env)?),
            poster,
            scheduler,
            Limits::from_source(&Env)?,
            RolePolicy::from_source(&Env)?,
        ))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        Ok(self.batch(event).await)
    }
}
