//! Presence events (DESIGN.md, "Interactive features"): for the group kinds configured for it
//! (`policy::PresencePolicy`), members receive
//! `{"type":"presence","group":"room:7","user":"u1","state":"online"|"offline"}` when a user's
//! first connection joins the group (a `join`, or the auto-joins of `$connect`) and when their
//! last one leaves it (`leave`, `$disconnect`, or the cleanup after a 410).
//!
//! Flapping is absorbed by a grace period: the last departure only records when the user left
//! and puts a presence check on Herald's internal queue, delayed by the grace period. If the
//! user is back by then, the arrival cleared the departure without a word, and the check finds
//! nothing to announce; otherwise the check announces `offline`. The internal queue is the one
//! fan-out jobs use, which producers cannot send to, so nobody can forge an offline event.
//!
//! Groups above the configured size send no events (each one is a post per member); the HTTP
//! presence query still answers for them.

use serde_json::{Map, Value};

use crate::domain::config::Limits;
use crate::domain::cursor::now_millis;
use crate::domain::frames;
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::policy::PresencePolicy;
use crate::io::delivery::{Poster, fan_out};
use crate::io::queue::{PresenceCheck, Queue, QueueError};
use crate::io::store::{Closed, Departure, Store, StoreError, epoch_seconds};

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Posts in flight while announcing to a group (groups are small: at most `max_members`).
const CONCURRENCY: usize = 16;

#[derive(Clone, Debug)]
pub struct Presence {
    store: Store,
    queue: Queue,
    poster: Poster,
    policy: PresencePolicy,
    /// How long a presence record outlives its last update (a connection's lifetime).
    ttl_seconds: u64,
    shards: u16,
    /// The function it runs in, for metrics.
    function: &'static str,
}

impl Presence {
    pub fn new(function: &'static str, store: Store, queue: Queue, poster: Poster, policy: PresencePolicy, limits: &Limits) -> Self {
        Self {
            function,
            store,
            queue,
            poster,
            policy,
            ttl_seconds: limits.connection_ttl_seconds,
            shards: limits.membership_shards,
        }
    }

    /// The function it runs in (metrics of the services built around it).
    pub fn function(&self) -> &'static str {
        self.function
    }

    /// The most posts an arrival in `group` can cause: the presence cap where events are sent.
    pub fn most_posts(&self, group: &Group) -> usize {
        if self.policy.applies(group) { self.policy.max_members } else { 0 }
    }

    /// `connection` of `user` joined `groups`: announce the user online where they were not.
    /// Answers how many posts that made.
    pub async fn arrived(&self, tenant: &str, user: &str, connection: &str, groups: &[Group]) -> Result<usize, PresenceError> {
        let expires = epoch_seconds() + self.ttl_seconds as i64;
        let mut posts = 0;
        for group in groups.iter().filter(|g| self.policy.applies(g)) {
            if self.store.presence.arrive(&group.key(tenant), user, connection, expires).await? {
                posts += self.announce(tenant, group, user, "online", Some(connection)).await?;
            }
        }
        Ok(posts)
    }

    /// `connection` of `user` left `groups`: where it was the user's last, check again after the
    /// grace period.
    pub async fn departed(&self, tenant: &str, user: &str, connection: &str, groups: &[Group]) -> Result<(), PresenceError> {
        for group in groups.iter().filter(|g| self.policy.applies(g)) {
            let departure = self
                .store
                .presence
                .depart(&group.key(tenant), user, connection, now_millis())
                .await?;
            if let Departure::Pending { left_at } = departure {
                let check = PresenceCheck {
                    tenant: tenant.to_owned(),
                    group: group.to_string(),
                    user: user.to_owned(),
                    left_at,
                };
                self.queue.presence_check(&check, self.policy.grace_seconds).await?;
            }
        }
        Ok(())
    }

    /// Connections closed (`$disconnect`, 410 cleanup): each left all its groups.
    pub async fn closed(&self, closed: &[Closed]) -> Result<(), PresenceError> {
        for c in closed.iter().filter(|c| !c.user.is_empty()) {
            self.departed(&c.tenant, &c.user, &c.connection, &c.groups).await?;
        }
        Ok(())
    }

    /// The grace period of a departure is over: announce `offline` unless the user came back.
    pub async fn check(&self, check: &PresenceCheck) -> Result<(), PresenceError> {
        let Ok(group) = Group::parse(&check.group) else {
            tracing::error!(group = %check.group, "presence check names no group; dropped");
            return Ok(());
        };
        if self
            .store
            .presence
            .settle(&group.key(&check.tenant), &check.user, check.left_at)
            .await?
        {
            self.announce(&check.tenant, &group, &check.user, "offline", None).await?;
        }
        Ok(())
    }

    /// Posts the event to the group's live connections (but `exclude`), unless the group is
    /// bigger than the configured cap; answers how many posts it made.
    async fn announce(&self, tenant: &str, group: &Group, user: &str, state: &str, exclude: Option<&str>) -> Result<usize, PresenceError> {
        let key = group.key(tenant);
        let cap = self.policy.max_members;
        let mut members = Vec::new();
        for shard in 0..group.shards(self.shards) {
            let page = self
                .store
                .connections
                .members_page(&key, shard, None, cap + 1 - members.len())
                .await?;
            members.extend(page.members);
            if members.len() > cap {
                tracing::info!(%group, cap, "group above the presence cap: no event");
                Metrics::new(self.function).count("PresenceSkipped", 1).flush();
                return Ok(0);
            }
        }
        let frame = presence_frame(group, user, state);
        let targets: Vec<String> = members
            .into_iter()
            .map(|m| m.connection_id)
            .filter(|c| Some(c.as_str()) != exclude)
            .collect();
        let posts = targets.len();
        let report = fan_out(&self.poster, targets, &frame, CONCURRENCY).await;
        // Gone connections are cleaned up like anywhere else; their own departures are checked
        // after the grace period (never announced from here, so this cannot recurse).
        let gone = self.store.connections.close_gone(&report.gone, now_millis()).await?;
        self.closed(&gone.closed).await?;
        if !report.retry.is_empty() {
            // Not retried: a late `online` could land after the `offline` that followed it.
            // Logged, so that a member who missed an event can be told from one who was never sent it.
            tracing::warn!(%group, %user, state, missed = report.retry.len(), "presence event not delivered (transient failures)");
        }
        tracing::info!(%group, %user, state, delivered = report.delivered, "presence event");
        Metrics::new(self.function)
            .count("PresenceEvents", 1)
            .count("PresenceDelivered", report.delivered)
            .flush();
        Ok(posts)
    }
}

/// `{"type":"presence","group":"room:7","user":"u1","state":"online"}`
pub fn presence_frame(group: &Group, user: &str, state: &str) -> String {
    let mut m = Map::new();
    m.insert("group".into(), Value::String(group.to_string()));
    m.insert("user".into(), Value::String(user.to_owned()));
    m.insert("state".into(), Value::String(state.to_owned()));
    frames::reply("presence", m, None)
}
