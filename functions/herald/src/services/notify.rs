//! A producer's notification, in the order it runs: a `deliverAt` ahead is deferred, a
//! cancelled or superseded deferred copy dropped; then the lifecycle every logged notification
//! shares (`lifecycle`: claim and log, fan out, schedule the escalation checks, Web Push the users
//! no connection took, finish the claim), and a reminder marked fired. Reading this file top to
//! bottom is following a notification from `dispatch` to the posts.
//!
//! It also runs what comes back on the internal queue: fan-out jobs of big audiences, presence
//! checks and escalation checks ([`Notifier::internal`]).

use std::time::Instant;

use chrono::Utc;

use crate::domain::config::Limits;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{Control, NotificationRequest, Revision, Target};
use crate::domain::policy::RolePolicy;
use crate::io::delivery::Poster;
use crate::io::push::PushSender;
use crate::io::queue::{InternalMessage, Queue};
use crate::io::store::{ReminderState, Store, StoreError, epoch_seconds};
use crate::services::broadcast::{BroadcastError, Broadcaster, FanoutSummary, Reach};
use crate::services::chat::{ChatError, Receipts};
use crate::services::escalation::{Escalation, EscalationError, Fired};
use crate::services::inbox::{InboxError, Revised, Revisions};
use crate::services::lifecycle::{Lifecycle, LifecycleError, Send, Sent};
use crate::services::membership::Unsubscriber;
use crate::services::preferences;
use crate::services::presence::{Presence, PresenceError};
use crate::services::schedule::{DeferError, Deferral, Deferred, Scheduler};
use crate::services::web_push::Pusher;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Defer(#[from] DeferError),
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    Escalation(#[from] EscalationError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Push(#[from] crate::services::web_push::PushError),
}

impl NotifyError {
    /// How long until another invocation's claim on this work ends, when that is the failure.
    pub fn lease_left_ms(&self) -> Option<u64> {
        match self {
            NotifyError::Broadcast(BroadcastError::InProgress { lease_left_ms })
            | NotifyError::Escalation(EscalationError::InProgress { lease_left_ms }) => Some(*lease_left_ms),
            NotifyError::Lifecycle(e) => e.lease_left_ms(),
            _ => None,
        }
    }
}

/// What became of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notified {
    Delivered(FanoutSummary),
    Duplicate,
    Deferred,
    Cancelled,
    /// A deferred copy whose notification was moved to another time.
    Superseded,
}

/// What became of one internal-queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Internal {
    /// A fan-out job's page (or walk).
    Shard(FanoutSummary),
    /// A presence check after a departure's grace period.
    Presence,
    /// An escalation check at (or before) its deadline.
    Escalation(Fired),
    /// A receipt flush (chat): the posts it made.
    Receipt(usize),
    /// A push held back by quiet hours, at their end.
    PushedLater,
}

pub struct Notifier {
    pusher: Pusher,
    store: Store,
    revisions: Revisions,
    lifecycle: Lifecycle,
    deferral: Deferral,
    escalation: Escalation,
    presence: Presence,
    unsubscriber: Unsubscriber,
    queue: Queue,
    limits: Limits,
    /// Chat receipts' trailing pushes; `None`: flushes are dropped.
    receipts: Option<Receipts>,
}

impl Notifier {
    /// Web Push is off until [`Notifier::with_push`].
    pub fn new(
        store: Store,
        queue: Queue,
        poster: Poster,
        scheduler: Scheduler,
        limits: Limits,
        roles: RolePolicy,
        presence: Presence,
    ) -> Self {
        let escalation = Escalation::new("dispatch", store.clone(), queue.clone(), scheduler.clone(), &limits);
        let broadcaster = Broadcaster::new(store.clone(), queue.clone(), poster.clone(), limits.clone(), presence.clone());
        let pusher = Pusher::new(store.clone(), queue.clone(), None, limits.retry_max_attempts).with_later(escalation.clone());
        Self {
            pusher: pusher.clone(),
            revisions: Revisions::new(store.clone(), broadcaster.clone(), &limits),
            unsubscriber: Unsubscriber::new(store.clone(), poster, roles, presence.clone()),
            lifecycle: Lifecycle::new(broadcaster).with_escalation(escalation.clone()).with_push(pusher),
            escalation,
            deferral: Deferral::new(store.clone(), queue.clone(), scheduler, limits.retention_seconds),
            queue,
            presence,
            store,
            limits,
            receipts: None,
        }
    }

    /// Runs chat receipt flushes with this service.
    pub fn with_receipts(mut self, receipts: Receipts) -> Self {
        self.receipts = Some(receipts);
        self
    }

    /// Web Push with this sender (`None`: off).
    pub fn with_push(mut self, sender: Option<PushSender>) -> Self {
        let pusher =
            Pusher::new(self.store.clone(), self.queue.clone(), sender, self.limits.retry_max_attempts).with_later(self.escalation.clone());
        self.lifecycle = self.lifecycle.with_push(pusher.clone());
        self.pusher = pusher;
        self
    }

    /// A producer's update or recall of a notification it sent (`inbox`).
    pub async fn revise(&self, revision: &Revision) -> Result<Revised, InboxError> {
        self.revisions.revise(revision).await
    }

    /// Runs a producer notification's lifecycle. `deferred_for`: set on Herald's own deferred
    /// copy, the `deliverAt` it was deferred for.
    pub async fn notify(&self, req: NotificationRequest, deferred_for: Option<String>) -> Result<Notified, NotifyError> {
        let id = req.id.clone().unwrap_or_default();
        if let Some(at) = req.deliver_at {
            let wait = (at - Utc::now()).num_milliseconds();
            if wait > 1000 {
                return self.defer(req).await;
            }
            if let Some(r) = self.store.reminders.get(&req.tenant, &id).await? {
                if r.state == ReminderState::Cancelled {
                    Metrics::new("dispatch").count("Cancelled", 1).flush();
                    return Ok(Notified::Cancelled);
                }
                // A delayed copy of an earlier `deliverAt`: the id was sent again with another
                // time, and the reminder record holds the newest. SQS cannot take back a delayed
                // message, so the copy is recognised here and dropped.
                if r.state == ReminderState::Scheduled && deferred_for.as_deref().is_some_and(|d| d != r.deliver_at) {
                    tracing::info!(tenant = %req.tenant, id = %id, deferred_for = ?deferred_for, now_for = %r.deliver_at, "superseded deferred copy dropped");
                    Metrics::new("dispatch").count("Superseded", 1).flush();
                    return Ok(Notified::Superseded);
                }
            }
        }
        let started = Instant::now();
        let expires = epoch_seconds() + req.ttl_seconds.unwrap_or(self.limits.retention_seconds) as i64;
        let ttl = req.ttl_seconds.unwrap_or(self.limits.retention_seconds);
        let send = Send {
            tenant: &req.tenant,
            id: &id,
            topics: self.inbox_topics(&req).await?,
            content: &req.content,
            expires,
            reach: Reach::default(),
            escalate_after: req.escalate_after,
            push: req.push.map(|p| (p, ttl)),
        };
        let (summary, pushed) = match self.lifecycle.send(send).await? {
            Sent::Duplicate(_) => {
                Metrics::new("dispatch").count("Duplicates", 1).flush();
                return Ok(Notified::Duplicate);
            }
            Sent::Delivered { summary, pushed, .. } => (summary, pushed),
        };
        if req.deliver_at.is_some() {
            self.store.reminders.mark_fired(&req.tenant, &id, expires).await?;
        }
        let mut m = Metrics::new("dispatch");
        m.count("Accepted", 1)
            .count("Delivered", summary.delivered)
            .count("Gone", summary.gone)
            .count("Retried", summary.retried)
            .count("Closed", summary.closed)
            // 410s from connections in their first minute: the completion time names them, and
            // their own resumes send the entry again (`replay::spare`).
            .count("ConnectingGone", summary.connecting_gone.len())
            .count("ShardsQueued", summary.shards_queued)
            .millis("FanoutDuration", started.elapsed().as_secs_f64() * 1000.0)
            .millis("PostingDuration", summary.posting_us as f64 / 1000.0)
            .flush();
        tracing::info!(tenant = %req.tenant, id = %id, delivered = summary.delivered, gone = summary.gone, retried = summary.retried, shards = summary.shards_queued, posting_us = summary.posting_us, pushed = pushed.delivered, push_retried = pushed.retried, push_gone = pushed.gone, "dispatched");
        Ok(Notified::Delivered(summary))
    }

    /// The topics to log under: for notifications to named users, only the users whose inbox
    /// takes the event (`preferences`, in-app channel); other targets as they are.
    async fn inbox_topics(&self, req: &NotificationRequest) -> Result<Vec<crate::domain::groups::Group>, NotifyError> {
        let users = match &req.to {
            Target::User(u) => std::slice::from_ref(u),
            Target::Users(us) => us.as_slice(),
            _ => return Ok(req.to.topics()),
        };
        let kept = preferences::inbox_takes(&self.store, &req.tenant, users, &req.content).await?;
        if kept.len() < users.len() {
            Metrics::new("dispatch").count("InboxOff", users.len() - kept.len()).flush();
        }
        Ok(kept.iter().map(|u| crate::domain::groups::Group::user(u)).collect())
    }

    async fn defer(&self, req: NotificationRequest) -> Result<Notified, NotifyError> {
        let deferred = self.deferral.defer(&req, None).await?;
        tracing::info!(tenant = %req.tenant, id = ?req.id, ?deferred, "deferred");
        if deferred == Deferred::Cancelled {
            return Ok(Notified::Cancelled);
        }
        Metrics::new("dispatch").count("Deferred", 1).flush();
        Ok(Notified::Deferred)
    }

    /// Applies a producer's control message: a durable subscription set or removed (removed on
    /// the user's live connections too), or a deferred notification cancelled.
    pub async fn control(&self, control: Control) -> Result<(), NotifyError> {
        match control {
            Control::Subscribe { tenant, user, group } => self.store.subscriptions.subscribe(&tenant, &user, &group).await?,
            Control::Unsubscribe { tenant, user, group } => {
                self.unsubscriber.unsubscribe(&tenant, &user, &group).await?;
            }
            Control::Cancel { tenant, id } => {
                self.deferral.cancel(&tenant, &id).await?;
            }
        }
        Ok(())
    }

    /// Runs a message Herald put on its internal queue.
    pub async fn internal(&self, message: InternalMessage) -> Result<Internal, NotifyError> {
        let job = match message {
            InternalMessage::Job(job) => job,
            InternalMessage::Presence(check) => {
                self.presence.check(&check).await?;
                return Ok(Internal::Presence);
            }
            // A push that waited for the end of the user's quiet hours (#33).
            InternalMessage::Escalation(check) if let Some(later) = check.push => {
                if check.due > epoch_seconds() {
                    self.escalation.wait(&check).await?;
                    return Ok(Internal::Escalation(Fired::NotYet));
                }
                self.pusher.push_later(&check, later).await?;
                return Ok(Internal::PushedLater);
            }
            InternalMessage::Escalation(check) => return Ok(Internal::Escalation(self.escalation.check(&check).await?)),
            InternalMessage::Receipt(flush) => {
                let posts = match &self.receipts {
                    Some(receipts) => receipts.flush(&flush).await?,
                    None => 0,
                };
                return Ok(Internal::Receipt(posts));
            }
        };
        let summary = self.lifecycle.broadcaster().run_job(&job).await?;
        Metrics::new("dispatch")
            .count("Delivered", summary.delivered)
            .count("Gone", summary.gone)
            .count("Retried", summary.retried)
            .count("Closed", summary.closed)
            .flush();
        Ok(Internal::Shard(summary))
    }
}
