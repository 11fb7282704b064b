//! Log first, then push: what a producer notification (`dispatch`) and a client publish
//! (`ws-message`) share once they are validated.
//!
//! - [`Broadcaster::log`] claims the id (idempotency), and writes one log entry per topic, visible
//!   before the horizon passes its cursor (see `horizon`): from here on nothing is lost.
//! - [`Broadcaster::fan_out`] posts a frame to the topics' live connections: each membership
//!   shard's first page here, the rest of a big group as walk and post jobs on the internal queue,
//!   in a chain of at most eight hops (`delivery::chain`);
//!   410 → the connection and the membership row it came from are removed now; 429/5xx → one
//!   more post, then the connection is closed so that its client resumes (only for logged
//!   frames: an ephemeral one is not worth a second try); see `delivery::post_or_close`.
//! - [`Broadcaster::run_job`] runs one fan-out job: a walk (reads a budget of a shard, queues
//!   post jobs and the next walk) or a post job.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chrono::Utc;
use futures_util::StreamExt;

use crate::domain::config::Limits;
use crate::domain::cursor::{Cursor, now_millis};
use crate::domain::groups::Group;
use crate::domain::horizon::Horizon;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{Content, LogEntry, format_time, now_rfc3339, without_cursor};
use crate::io::delivery::{FanoutReport, Poster, Unreachable, chain, close_gone_sockets, fan_out, fan_out_live, post_or_close};
use crate::io::queue::{CollapseRef, FanoutJob, Queue, QueueError, RetryJob};
use crate::io::store::{Claim, Collapsed, MemberRow, Posted, Store, StoreError, epoch_seconds};
use crate::services::presence::{Presence, PresenceError};

#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error("another invocation is delivering this notification; retry in {lease_left_ms} ms")]
    InProgress { lease_left_ms: u64 },
    #[error("the log write kept landing behind the visibility horizon; retry later")]
    LateLog,
}

/// Connections a completion time may name as having answered 410 inside their `$connect`;
/// beyond it (a reconnect storm in a big group) no completion time is recorded.
const MAX_MISSED_BY: usize = 32;

/// Log writes in a row that may land too late before the message is left for redelivery.
const MAX_LATE_WRITES: u32 = 3;

/// Post jobs a walk sends at once (one SendMessage each).
const JOB_SENDS_IN_FLIGHT: usize = 16;

/// What [`Broadcaster::log`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    /// Logged now: push these entries.
    Entries(Vec<(Group, LogEntry)>),
    /// Logged and pushed before (same id): nothing to do.
    Duplicate(Cursor),
}

/// One frame for one topic's live connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: Group,
    pub frame: String,
    /// Set for an entry of a latest-value stream (its retries check it is still the latest).
    pub collapse: Option<CollapseRef>,
}

impl Outgoing {
    /// The live frame of a logged entry.
    pub fn entry(topic: Group, entry: &LogEntry) -> Self {
        Self {
            collapse: entry.content.collapse.as_ref().map(|key| CollapseRef {
                topic: entry.topic.clone(),
                key: key.clone(),
                cursor: entry.cursor.to_string(),
            }),
            frame: entry.frame(false),
            topic,
        }
    }
}

/// How a frame is fanned out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reach<'a> {
    /// A connection that does not receive it (a publisher without `echo`).
    pub exclude: Option<&'a str>,
    /// Not logged: failed posts are not retried.
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutSummary {
    pub delivered: usize,
    pub gone: usize,
    /// Connections that could not take the frame, closed so that they resume.
    pub closed: usize,
    /// Connections that could not even be closed, handed to the retry queue.
    pub retried: usize,
    /// Posts refused for good, and connections that answered 410 but could not be closed.
    pub failed: usize,
    pub shards_queued: usize,
    /// Connections that answered 410 within their first minute (likely still inside their
    /// `$connect`): they may open without the frame.
    pub connecting_gone: Vec<String>,
    /// Time spent posting (excluding reads and writes of state), for the fan-out benchmark.
    pub posting_us: u64,
    /// When this invocation's posts, re-posts and closes were done (epoch ms; 0: not a fan-out
    /// of a logged frame).
    pub posted_at: u64,
    /// Users of personal topics (`user:{sub}`) that no live connection took the frame for: none
    /// was open, or every one was gone or refused it. Retried posts count as taken. Who gets a
    /// Web Push with `"push": true` (`offline`).
    /// A set: dispatch looks up each targeted user in it (a `users` list may name 1,000).
    pub unreached: BTreeSet<String>,
}

impl FanoutSummary {
    /// Posts this invocation made (each connection's first attempt), for work budgets.
    pub fn posts(&self) -> usize {
        self.delivered + self.gone + self.closed + self.retried + self.failed
    }

    fn add(&mut self, r: &FanoutReport) {
        self.delivered += r.delivered;
        self.gone += r.gone.len();
        self.failed += r.failed;
    }

    fn settled(&mut self, u: &Unreachable) {
        self.delivered += u.delivered;
        self.gone += u.gone.len();
        self.closed += u.closed;
        self.retried += u.unclosed.len();
    }
}

/// Where a fan-out's frame goes, besides its connections.
struct Target<'a> {
    tenant: &'a str,
    id: &'a str,
    reach: Reach<'a>,
    collapse: Option<&'a CollapseRef>,
}

/// What a fan-out learnt of its connections from the membership rows it read.
#[derive(Default)]
struct Audience {
    /// Which membership rows each connection was read from, to remove them on a 410.
    rows: HashMap<String, Vec<MemberRow>>,
    /// Connections whose 410 may mean "not open yet" (see `close_gone`).
    connecting: HashSet<String>,
    /// Connections that take batch frames: their posts may be aggregated (`delivery::outbox`).
    batching: HashSet<String>,
}

/// The frame for the connections that caught up, and the frame without its cursor for those
/// that did not (see `horizon`); one variant when the frame has no cursor. Either list may be
/// empty; the first always comes, so a fan-out to nobody still says so.
fn variants(frame: &str, connections: Vec<(String, bool)>) -> Vec<(String, Vec<String>)> {
    let (caught_up, behind): (Vec<_>, Vec<_>) = connections.into_iter().partition(|(_, caught_up)| *caught_up);
    let caught_up: Vec<String> = caught_up.into_iter().map(|(c, _)| c).collect();
    let behind: Vec<String> = behind.into_iter().map(|(c, _)| c).collect();
    if behind.is_empty() {
        return vec![(frame.to_owned(), caught_up)];
    }
    match without_cursor(frame) {
        Some(bare) => vec![(frame.to_owned(), caught_up), (bare, behind)],
        None => vec![(frame.to_owned(), caught_up.into_iter().chain(behind).collect())],
    }
}

#[derive(Clone, Debug)]
pub struct Broadcaster {
    store: Store,
    queue: Queue,
    poster: Poster,
    limits: Limits,
    horizon: Horizon,
    presence: Presence,
}

impl Broadcaster {
    pub fn new(store: Store, queue: Queue, poster: Poster, limits: Limits, presence: Presence) -> Self {
        Self {
            store,
            queue,
            poster,
            limits,
            horizon: Horizon::default(),
            presence,
        }
    }

    /// Claims `id` and writes its log entries (one per topic) under one cursor. `expires`: when
    /// the entries expire (epoch seconds).
    pub async fn log(&self, tenant: &str, id: &str, topics: Vec<Group>, content: &Content, expires: i64) -> Result<Logged, BroadcastError> {
        let lease_ms = self.limits.claim_lease_seconds * 1000;
        // The id is remembered longer than the entry lives: a producer retry or a DLQ redrive
        // after a short `ttlSeconds` is still a duplicate.
        let remembered = expires.max(epoch_seconds() + self.limits.dedupe_seconds as i64);
        let claimed = match self
            .store
            .idempotency
            .claim(tenant, id, Cursor::now(), remembered, lease_ms)
            .await?
        {
            Claim::Done(c) => return Ok(Logged::Duplicate(c)),
            Claim::InProgress { lease_left_ms } => return Err(BroadcastError::InProgress { lease_left_ms }),
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
        loop {
            let entries: Vec<(Group, LogEntry)> = topics
                .iter()
                .map(|topic| {
                    let entry = LogEntry {
                        id: id.to_owned(),
                        cursor,
                        topic: topic.to_string(),
                        content: content.clone(),
                        created_at: created_at.clone(),
                    };
                    (topic.clone(), entry)
                })
                .collect();
            self.store.log.append(tenant, &entries, expires).await?;
            if self.horizon.landed_now(cursor) {
                // A latest-value stream keeps one entry per key: this one replaces the previous
                // one, or (a later one got there first) is dropped unpushed.
                let mut pushed = Vec::with_capacity(entries.len());
                for (topic, entry) in entries {
                    if let Some(key) = &entry.content.collapse
                        && self.store.log.collapse(tenant, &topic, key, entry.cursor, expires).await? == Collapsed::Superseded
                    {
                        Metrics::new(self.presence.function()).count("Collapsed", 1).flush();
                        continue;
                    }
                    pushed.push((topic, entry));
                }
                return Ok(Logged::Entries(pushed));
            }
            attempts += 1;
            Metrics::new(self.presence.function()).count("LateLogWrites", 1).flush();
            tracing::warn!(%tenant, %id, %cursor, attempts, "log write landed behind the horizon; writing again");
            if attempts >= MAX_LATE_WRITES {
                return Err(BroadcastError::LateLog);
            }
            cursor = Cursor::now();
        }
    }

    /// Marks a logged id delivered: a later duplicate is skipped. When `summary` shows every
    /// member connection took the frame or was closed by now (nothing left to a shard job or the
    /// retry queue), that time is kept for resumes (`replay::held`).
    pub async fn finish(&self, tenant: &str, id: &str, summary: &FanoutSummary) -> Result<(), BroadcastError> {
        self.finish_logged(tenant, id, summary, &[]).await
    }

    /// [`Self::finish`], recording where `entries` are (their cursor and topics), so that a
    /// producer can update or recall the notification later (`services::inbox`).
    pub async fn finish_logged(
        &self,
        tenant: &str,
        id: &str,
        summary: &FanoutSummary,
        entries: &[(Group, LogEntry)],
    ) -> Result<(), BroadcastError> {
        let complete =
            summary.shards_queued == 0 && summary.retried == 0 && summary.failed == 0 && summary.connecting_gone.len() <= MAX_MISSED_BY;
        let posted = (complete && summary.posted_at > 0).then(|| Posted {
            at: summary.posted_at,
            // A set: a connection can be a member of more than one of the topics.
            missed_by: summary
                .connecting_gone
                .iter()
                .cloned()
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect(),
        });
        let topics: Vec<Group> = entries.iter().map(|(g, _)| g.clone()).collect();
        let logged = entries.first().map(|(_, e)| (e.cursor, topics.as_slice()));
        Ok(self.store.idempotency.finish_logged(tenant, id, posted.as_ref(), logged).await?)
    }

    /// Posts each topic's frame to the topic's live connections. Each membership shard's first
    /// page is posted here; the rest of a big group becomes jobs for other invocations.
    pub async fn fan_out(&self, tenant: &str, id: &str, frames: &[Outgoing], reach: Reach<'_>) -> Result<FanoutSummary, BroadcastError> {
        let mut pages = Vec::new();
        let mut collapse_of: HashMap<&str, &CollapseRef> = HashMap::new();
        let mut user_of: HashMap<&str, &str> = HashMap::new();
        for out in frames {
            if let Group::User(user) = &out.topic {
                user_of.insert(out.frame.as_str(), user.as_str());
            }
            if let Some(c) = &out.collapse {
                collapse_of.insert(out.frame.as_str(), c);
            }
            let shards = out.topic.shards(self.limits.membership_shards);
            let first_page = (self.limits.fanout_shard_size / usize::from(shards)).max(1);
            for shard in 0..shards {
                pages.push((out.topic.key(tenant), shard, first_page, out.frame.clone()));
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
        // Per frame, its connections and whether each has caught up (gets the frame's cursor).
        let mut by_frame: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        let mut audience = Audience::default();
        let now = now_millis();
        for result in fetched {
            let (key, shard, frame, page) = result?;
            for m in &page.members {
                audience.rows.entry(m.connection_id.clone()).or_default().push(MemberRow {
                    connection: m.connection_id.clone(),
                    group_key: key.clone(),
                    shard,
                });
                if m.maybe_connecting(now) {
                    audience.connecting.insert(m.connection_id.clone());
                }
                if m.batch {
                    audience.batching.insert(m.connection_id.clone());
                }
            }
            if let Some(after) = page.next {
                self.queue
                    .fanout_job(&FanoutJob {
                        tenant: tenant.to_owned(),
                        id: id.to_owned(),
                        group_key: key,
                        shard,
                        after: Some(after),
                        frame: frame.clone(),
                        connections: Vec::new(),
                        behind: Vec::new(),
                        exclude: reach.exclude.map(str::to_owned),
                        ephemeral: reach.ephemeral,
                    })
                    .await?;
                summary.shards_queued += 1;
            }
            by_frame.entry(frame).or_default().extend(
                page.members
                    .into_iter()
                    .filter(|m| Some(m.connection_id.as_str()) != reach.exclude)
                    .map(|m| (m.connection_id, m.caught_up)),
            );
        }
        for (frame, connections) in by_frame {
            let to = Target {
                tenant,
                id,
                reach,
                collapse: collapse_of.get(frame.as_str()).copied(),
            };
            let mut reached = false;
            for (variant, connections) in variants(&frame, connections) {
                reached |= self.post_variant(&to, &variant, connections, &audience, &mut summary).await?;
            }
            if !reached && let Some(user) = user_of.get(frame.as_str()) {
                summary.unreached.insert((*user).to_owned());
            }
        }
        summary.posted_at = now_millis();
        Ok(summary)
    }

    /// Posts one variant of a frame (with or without its cursor) and settles its failures;
    /// answers whether some connection took it (or will, on a retry).
    async fn post_variant(
        &self,
        to: &Target<'_>,
        frame: &str,
        connections: Vec<String>,
        audience: &Audience,
        summary: &mut FanoutSummary,
    ) -> Result<bool, BroadcastError> {
        let posting = Instant::now();
        let mut r = fan_out_live(&self.poster, connections, frame, self.limits.fanout_concurrency, &audience.batching).await;
        if !to.reach.ephemeral {
            summary.failed += close_gone_sockets(&self.poster, &r.gone, self.limits.fanout_concurrency).await;
        }
        // A 410 from a connection whose row is that young is not looked into: it is most
        // likely one inside its `$connect` (a reconnect storm has many), and reading each
        // one's item would cost a read per post for what `close_gone` would leave anyway.
        let (connecting, gone): (Vec<String>, Vec<String>) = r.gone.drain(..).partition(|c| audience.connecting.contains(c));
        r.gone = gone;
        // Such a connection may open right after without this frame: its own catch-up must read
        // the entry, so the completion time names it (`replay::spare`).
        summary.connecting_gone.extend(connecting);
        summary.posting_us += posting.elapsed().as_micros() as u64;
        let reached = r.delivered > 0 || !r.retry.is_empty();
        let rows_of = |c: &str| audience.rows.get(c).cloned().unwrap_or_default();
        let unreachable = self
            .settle(to.tenant, to.id, frame, &r, to.reach.ephemeral, to.collapse.cloned(), &rows_of)
            .await?;
        summary.settled(&unreachable);
        summary.add(&r);
        Ok(reached)
    }

    /// A job of a big audience (see [`chain`]): a walk reads part of a shard and splits it into
    /// post jobs, a post job posts to the connections it names. A job is claimed like a
    /// notification, so a redelivered job (visibility timeout, retry after a partial failure)
    /// does not post its page twice.
    pub async fn run_job(&self, job: &FanoutJob) -> Result<FanoutSummary, BroadcastError> {
        let key = job.claim_key();
        let expires = epoch_seconds() + self.limits.retention_seconds as i64;
        match self
            .store
            .idempotency
            .claim(&job.tenant, &key, Cursor::MIN, expires, self.limits.claim_lease_seconds * 1000)
            .await?
        {
            Claim::Done(_) => return Ok(FanoutSummary::default()),
            Claim::InProgress { lease_left_ms } => return Err(BroadcastError::InProgress { lease_left_ms }),
            Claim::New(_) | Claim::Unfinished(_) => {}
        }
        let mut summary = FanoutSummary::default();
        let page = if job.connections.is_empty() {
            let (page, queued) = self.walk(job).await?;
            summary.shards_queued = queued;
            page
        } else {
            let behind: HashSet<&String> = job.behind.iter().collect();
            job.connections.iter().map(|c| (c.clone(), !behind.contains(c))).collect()
        };
        let page = page
            .into_iter()
            .filter(|(c, _)| job.exclude.as_deref() != Some(c.as_str()))
            .collect();
        for (frame, connections) in variants(&job.frame, page) {
            let report = fan_out(&self.poster, connections, &frame, self.limits.fanout_concurrency).await;
            if !job.ephemeral {
                summary.failed += close_gone_sockets(&self.poster, &report.gone, self.limits.fanout_concurrency).await;
            }
            let rows_of = |c: &str| {
                vec![MemberRow {
                    connection: c.to_owned(),
                    group_key: job.group_key.clone(),
                    shard: job.shard,
                }]
            };
            let unreachable = self
                .settle(&job.tenant, &job.id, &frame, &report, job.ephemeral, None, &rows_of)
                .await?;
            summary.add(&report);
            summary.settled(&unreachable);
        }
        self.store.idempotency.finish(&job.tenant, &key, None).await?;
        Ok(summary)
    }

    /// Reads up to a walk's budget of the shard after `job.after`; queues the next walk first (so
    /// it proceeds in parallel), then a post job per page but the first, which it returns for
    /// this invocation to post. Returns that page (each connection with whether it caught up) and
    /// how many jobs it queued.
    async fn walk(&self, job: &FanoutJob) -> Result<(Vec<(String, bool)>, usize), BroadcastError> {
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
            read.extend(page.members.into_iter().map(|m| (m.connection_id, m.caught_up)));
            position = page.next;
            if position.is_none() || read.len() >= budget {
                break;
            }
        }
        let mut queued = 0;
        if position.is_some() {
            self.queue
                .fanout_job(&FanoutJob {
                    after: position,
                    connections: Vec::new(),
                    behind: Vec::new(),
                    ..job.clone()
                })
                .await?;
            queued += 1;
        }
        let page_size = self.limits.fanout_shard_size.max(1);
        let mut pages = read.chunks(page_size);
        let own = pages.next().map(<[(String, bool)]>::to_vec).unwrap_or_default();
        let posts: Vec<FanoutJob> = pages
            .map(|page| FanoutJob {
                connections: page.iter().map(|(c, _)| c.clone()).collect(),
                behind: page.iter().filter(|(_, caught_up)| !caught_up).map(|(c, _)| c.clone()).collect(),
                ..job.clone()
            })
            .collect();
        queued += posts.len();
        let sent: Vec<Result<(), QueueError>> = futures_util::stream::iter(posts)
            .map(|post| async move { self.queue.fanout_job(&post).await })
            .buffer_unordered(JOB_SENDS_IN_FLIGHT)
            .collect()
            .await;
        sent.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok((own, queued))
    }

    /// Acts on a fan-out's failures: gone connections are removed now (but those still inside
    /// their `$connect`, which will resume once open); retryable ones get the frame once more or
    /// are closed ([`post_or_close`]), and only those that could not be closed go to the retry
    /// queue (an ephemeral frame is not worth either), with the membership rows they were posted
    /// from (`rows_of`), so a later round can clean up as this one does. A gone connection
    /// without its connection item has the rows that drew its posts removed.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        tenant: &str,
        id: &str,
        frame: &str,
        report: &FanoutReport,
        ephemeral: bool,
        collapse: Option<CollapseRef>,
        rows_of: &(dyn Fn(&str) -> Vec<MemberRow> + Sync),
    ) -> Result<Unreachable, BroadcastError> {
        let mut gone_ids = report.gone.clone();
        let mut unreachable = Unreachable::default();
        if !ephemeral {
            unreachable = post_or_close(&self.poster, report.retry.clone(), frame, self.limits.fanout_concurrency).await;
            gone_ids.extend(unreachable.gone.iter().cloned());
        }
        let gone = self.store.connections.close_gone(&gone_ids, now_millis()).await?;
        self.presence.closed(&gone.closed).await?;
        if !unreachable.unclosed.is_empty() {
            self.queue
                .retry(&RetryJob {
                    tenant: tenant.to_owned(),
                    id: id.to_owned(),
                    frame: frame.to_owned(),
                    connections: unreachable.unclosed.clone(),
                    attempt: 1,
                    collapse,
                    rows: unreachable.unclosed.iter().flat_map(|c| rows_of(c)).collect(),
                })
                .await?;
        }
        let orphan_rows: Vec<MemberRow> = gone.orphans.iter().flat_map(|c| rows_of(c)).collect();
        self.store.connections.remove_rows(&orphan_rows).await?;
        Ok(unreachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(list: &[(&str, bool)]) -> Vec<(String, bool)> {
        list.iter().map(|(c, up)| ((*c).to_owned(), *up)).collect()
    }

    #[test]
    fn connections_that_have_not_caught_up_get_the_frame_without_its_cursor() {
        let frame = r#"{"type":"notification","id":"n1","cursor":"01KAS0R4G0000000000000000Z","topic":"tenant"}"#;
        let all = variants(frame, conns(&[("a", true), ("b", true)]));
        assert_eq!(all, vec![(frame.to_owned(), vec!["a".to_owned(), "b".to_owned()])]);

        let mixed = variants(frame, conns(&[("a", true), ("b", false), ("c", false)]));
        assert_eq!(mixed.len(), 2);
        assert_eq!(mixed[0], (frame.to_owned(), vec!["a".to_owned()]));
        let bare: serde_json::Value = serde_json::from_str(&mixed[1].0).unwrap();
        assert_eq!(bare.get("cursor"), None);
        assert_eq!(bare["id"], "n1");
        assert_eq!(mixed[1].1, vec!["b".to_owned(), "c".to_owned()]);

        // A fan-out to nobody still names the frame (a personal topic with no connection is
        // how the push path learns the user was not reached).
        assert_eq!(variants(frame, Vec::new()), vec![(frame.to_owned(), Vec::new())]);
    }

    #[test]
    fn a_frame_without_a_cursor_goes_to_everyone_as_it_is() {
        let ephemeral = r#"{"type":"notification","id":"e1","topic":"room:7","ephemeral":true}"#;
        let out = variants(ephemeral, conns(&[("a", true), ("b", false)]));
        assert_eq!(out, vec![(ephemeral.to_owned(), vec!["a".to_owned(), "b".to_owned()])]);
    }
}
