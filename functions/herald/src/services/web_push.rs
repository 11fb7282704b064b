//! Reaching users who are not connected: Web Push to the subscriptions a user registered, and
//! the rules of registering them ([`Subscriptions`]).
//!
//! Dispatch knows after a fan-out which targeted users no live connection took the frame for
//! (none was open, or every one was gone or refused it); [`Pusher::push`] sends those (or, for `"push":"always"`, every
//! targeted user) the notification's frame, and acts on each answer exactly once:
//! delivered → counted; 404/410 → the subscription is removed now; 429/5xx/timeouts → a
//! [`PushJob`] on the retry queue with backoff, run by `retry` through [`Pusher::retry`]; any
//! other answer → logged and counted (the notification is still in the log).

use futures_util::StreamExt;

use crate::domain::config::{ConfigError, PushSettings};
use crate::domain::metrics::Metrics;
use crate::domain::notification::{LogEntry, PushRequest};
use crate::domain::preferences::Channel;
use crate::io::push::{
    EndpointPolicy, PushMessage, PushOutcome, PushSender, SUBSCRIPTION_DAYS, SenderError, Subscription, Vapid, VapidError, endpoint_key,
    parse_endpoint, parse_subscription, payload,
};
use crate::io::queue::{EscalationCheck, PushJob, PushLater, Queue, QueueError};
use crate::io::store::{Store, StoreError, epoch_seconds};
use crate::services::escalation::Escalation;
use crate::services::preferences::{self, Gate};

/// Pushes in flight at once from one invocation.
const PUSHES_IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("a push held by quiet hours could not be put to wait: {0}")]
    Later(#[source] Box<crate::services::escalation::EscalationError>),
}

/// Building the push sender at init failed.
#[derive(Debug, thiserror::Error)]
pub enum PushInitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("VAPID configuration: {0}")]
    Vapid(#[from] VapidError),
    #[error(transparent)]
    Sender(#[from] SenderError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub delivered: usize,
    pub gone: usize,
    pub retried: usize,
    pub failed: usize,
}

/// One user to push to, and the log entry (under their personal topic) whose frame it carries.
#[derive(Debug, Clone)]
pub struct UserPush<'a> {
    pub user: &'a str,
    pub entry: &'a LogEntry,
}

#[derive(Clone, Debug)]
pub struct Pusher {
    store: Store,
    queue: Queue,
    /// `None` while no VAPID key is configured: push is off.
    sender: Option<PushSender>,
    max_attempts: u32,
    /// Where a push held back by quiet hours waits (dispatch); `None`: not held (retry, which
    /// only repeats pushes already let through).
    later: Option<Escalation>,
}

impl Pusher {
    pub fn new(store: Store, queue: Queue, sender: Option<PushSender>, max_attempts: u32) -> Self {
        Self {
            store,
            queue,
            sender,
            max_attempts,
            later: None,
        }
    }

    /// Pushes held back by a user's quiet hours wait on `escalation`'s timers.
    pub fn with_later(mut self, escalation: Escalation) -> Self {
        self.later = Some(escalation);
        self
    }

    /// A push that waited for the end of quiet hours: the notification's current version (a
    /// recalled one is not pushed), if the user's preferences still let it through.
    pub async fn push_later(&self, check: &EscalationCheck, later: PushLater) -> Result<PushSummary, PushError> {
        let Some(r) = self.store.inbox.revisable(&check.tenant, &check.id).await? else {
            return Ok(PushSummary::default());
        };
        if r.recalled {
            return Ok(PushSummary::default());
        }
        let topic = crate::domain::groups::Group::user(&check.user);
        let Some(entry) = self.store.log.entry(&check.tenant, &topic, r.logged).await? else {
            return Ok(PushSummary::default());
        };
        let users = [UserPush {
            user: &check.user,
            entry: &entry,
        }];
        let request = PushRequest {
            always: true,
            urgency: later.urgency,
        };
        self.push(&check.tenant, &check.id, &users, request, later.ttl_seconds).await
    }

    /// The sender of the configured VAPID key, or `None` when push is off.
    pub fn sender(settings: &PushSettings) -> Result<Option<PushSender>, PushInitError> {
        let Some(private) = &settings.vapid_private_key else {
            return Ok(None);
        };
        let vapid = Vapid::new(
            private,
            settings.vapid_public_key.as_deref(),
            settings.vapid_subject.as_deref().unwrap_or_default(),
        )?;
        Ok(Some(PushSender::new(vapid, EndpointPolicy::from(settings))?))
    }

    /// Pushes each user's entry to each of their subscriptions.
    pub async fn push(
        &self,
        tenant: &str,
        id: &str,
        users: &[UserPush<'_>],
        request: PushRequest,
        ttl_seconds: u64,
    ) -> Result<PushSummary, PushError> {
        if users.is_empty() {
            return Ok(PushSummary::default());
        }
        if self.sender.is_none() {
            tracing::warn!(%tenant, %id, users = users.len(), "push requested, but no VAPID key is configured");
            Metrics::new("dispatch").count("PushNotConfigured", 1).flush();
            return Ok(PushSummary::default());
        }
        // The users' preferences (#33): the category off for push, or quiet hours. One read
        // for all of them, none when every entry is critical (it passes anyway).
        let book = if users.iter().all(|u| u.entry.content.critical) {
            preferences::Book::default()
        } else {
            let names: Vec<&str> = users.iter().map(|u| u.user).collect();
            preferences::Book::read(&self.store, tenant, &names).await?
        };
        let now = chrono::Utc::now();
        let mut pushes = Vec::new();
        for u in users {
            match book.gate(u.user, Channel::Push, &u.entry.content, now) {
                Gate::Send => {}
                Gate::Off => {
                    Metrics::new("dispatch").count("PushMuted", 1).flush();
                    continue;
                }
                Gate::Later(until) => {
                    if let Some(escalation) = &self.later {
                        let check = EscalationCheck {
                            tenant: tenant.to_owned(),
                            id: id.to_owned(),
                            user: u.user.to_owned(),
                            cursor: u.entry.cursor.to_string(),
                            due: until.timestamp().max(epoch_seconds() + 1),
                            notification: serde_json::Value::Null,
                            push: Some(PushLater {
                                urgency: request.urgency,
                                ttl_seconds,
                            }),
                        };
                        escalation.wait(&check).await.map_err(|e| PushError::Later(Box::new(e)))?;
                        Metrics::new("dispatch").count("PushQuiet", 1).flush();
                    }
                    continue;
                }
            }
            let subs = self.store.push_subscriptions.list(tenant, u.user).await?;
            if subs.is_empty() {
                continue;
            }
            let payload = payload::payload(u.entry);
            let topic = u.entry.content.collapse.as_deref().map(payload::topic);
            for (key, sub) in subs {
                let job = PushJob {
                    tenant: tenant.to_owned(),
                    user: u.user.to_owned(),
                    id: id.to_owned(),
                    subscription: key,
                    payload: payload.clone(),
                    ttl_seconds,
                    urgency: request.urgency,
                    topic: topic.clone(),
                    attempt: 0,
                };
                pushes.push((job, sub));
            }
        }
        self.send_all(pushes, "dispatch").await
    }

    /// One retry-queue push: the subscription is read again (removed meanwhile: nothing to do).
    pub async fn retry(&self, job: PushJob) -> Result<PushSummary, PushError> {
        let Some(sub) = self.store.push_subscriptions.get(&job.tenant, &job.user, &job.subscription).await? else {
            return Ok(PushSummary::default());
        };
        self.send_all(vec![(job, sub)], "retry").await
    }

    async fn send_all(&self, pushes: Vec<(PushJob, Subscription)>, function: &'static str) -> Result<PushSummary, PushError> {
        let mut summary = PushSummary::default();
        let Some(sender) = &self.sender else {
            return Ok(summary);
        };
        let results: Vec<(PushJob, PushOutcome)> = futures_util::stream::iter(pushes)
            .map(|(job, sub)| async move {
                let message = PushMessage {
                    payload: job.payload.as_bytes(),
                    ttl_seconds: job.ttl_seconds,
                    urgency: job.urgency,
                    topic: job.topic.as_deref(),
                };
                let outcome = sender.send(&sub, message).await;
                (job, outcome)
            })
            .buffer_unordered(PUSHES_IN_FLIGHT)
            .collect()
            .await;
        for (job, outcome) in results {
            match outcome {
                PushOutcome::Delivered => summary.delivered += 1,
                PushOutcome::Gone => {
                    tracing::info!(tenant = %job.tenant, user = %job.user, "push subscription gone; removed");
                    self.store
                        .push_subscriptions
                        .delete(&job.tenant, &job.user, &job.subscription)
                        .await?;
                    summary.gone += 1;
                }
                PushOutcome::Refused => {
                    tracing::warn!(tenant = %job.tenant, user = %job.user, "push endpoint not on an allowed push service; subscription removed");
                    self.store
                        .push_subscriptions
                        .delete(&job.tenant, &job.user, &job.subscription)
                        .await?;
                    summary.failed += 1;
                }
                PushOutcome::Retryable { reason, after } if job.attempt < self.max_attempts => {
                    tracing::debug!(tenant = %job.tenant, user = %job.user, %reason, ?after, attempt = job.attempt, "push will be retried");
                    let job = PushJob {
                        attempt: job.attempt + 1,
                        ..job
                    };
                    self.queue.push_retry(&job, after).await?;
                    summary.retried += 1;
                }
                PushOutcome::Retryable { reason, .. } | PushOutcome::Failed(reason) => {
                    tracing::warn!(tenant = %job.tenant, user = %job.user, id = %job.id, %reason, attempt = job.attempt, "push failed; the log still holds the notification");
                    summary.failed += 1;
                }
            }
        }
        Metrics::new(function)
            .count("PushDelivered", summary.delivered)
            .count("PushGone", summary.gone)
            .count("PushRetried", summary.retried)
            .count("PushFailed", summary.failed)
            .flush();
        Ok(summary)
    }
}

/// Push subscriptions (browsers, devices) one user keeps at most.
pub const MAX_PUSH_SUBSCRIPTIONS: usize = 20;

/// A subscription refused (the message the caller sees), or a storage failure.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The push subscriptions users register: validated whole before anything is written (a refused
/// one stores nothing), one per endpoint, at most [`MAX_PUSH_SUBSCRIPTIONS`] a user.
#[derive(Clone, Debug)]
pub struct Subscriptions {
    store: Store,
    /// Where push endpoints may point (SSRF: Herald POSTs to them).
    endpoints: EndpointPolicy,
}

impl Subscriptions {
    pub fn new(store: Store, endpoints: EndpointPolicy) -> Self {
        Self { store, endpoints }
    }

    /// Stores the browser subscription `body` (sending it again refreshes its expiry).
    pub async fn subscribe(&self, tenant: &str, user: &str, body: &str) -> Result<(), SubscribeError> {
        let sub = parse_subscription(body, &self.endpoints).map_err(|e| SubscribeError::Invalid(e.to_string()))?;
        let existing = self.store.push_subscriptions.list(tenant, user).await?;
        let key = endpoint_key(&sub.endpoint);
        if existing.len() >= MAX_PUSH_SUBSCRIPTIONS && !existing.iter().any(|(k, _)| *k == key) {
            return Err(SubscribeError::Invalid(format!(
                "at most {MAX_PUSH_SUBSCRIPTIONS} push subscriptions per user; delete one first"
            )));
        }
        let mut expires = epoch_seconds() + SUBSCRIPTION_DAYS * 24 * 3600;
        if let Some(ms) = sub.expires_ms {
            expires = expires.min(ms / 1000);
        }
        if expires <= epoch_seconds() {
            return Err(SubscribeError::Invalid("expirationTime has passed".into()));
        }
        self.store.push_subscriptions.put(tenant, user, &sub, expires).await?;
        Ok(())
    }

    /// Forgets one of the user's subscriptions, by the endpoint `body` names (absent is fine).
    pub async fn unsubscribe(&self, tenant: &str, user: &str, body: &str) -> Result<(), SubscribeError> {
        let endpoint = parse_endpoint(body, &self.endpoints).map_err(|e| SubscribeError::Invalid(e.to_string()))?;
        self.store.push_subscriptions.remove(tenant, user, &endpoint).await?;
        Ok(())
    }
}
