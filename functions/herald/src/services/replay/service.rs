//! The replay service: one page of a reader's log, for `resume` (over its connection) and
//! `missed` (HTTP). Topics and where to start in; the entries to send, the resume point and the
//! page token out. The horizon rule is [`ReadPlan`]'s, what is not sent again [`spare`]'s;
//! `resume` (`Resumer`) and `missed` (`inbox::Inbox`) only call [`Replay::read`] and pass on
//! what it gives.

use std::collections::{HashMap, HashSet};

use super::spare::Holdings;
use super::{PageAnswer, ReadPlan, Reader, ReplayPage, Start, merge_pages};
use crate::domain::cursor::{Cursor, now_millis};
use crate::domain::groups::Group;
use crate::domain::notification::LogEntry;
use crate::io::store::{LogPage, Store, StoreError, epoch_seconds};

#[derive(Clone, Debug)]
pub struct Replay {
    store: Store,
    retention_seconds: u64,
}

/// One page of a read, as the caller asked for it.
#[derive(Debug, Clone)]
pub struct ReadRequest<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub topics: &'a [Group],
    pub start: Start,
    pub reader: Reader,
    pub limit: usize,
    /// Ids the client says it has.
    pub have: &'a [String],
    /// For a connection: per topic name, since when (epoch ms) fan-outs post to it.
    pub visible_since: HashMap<String, u64>,
    /// The reader's connection id (empty for `missed`).
    pub connection: &'a str,
}

/// What one page of a read gives.
#[derive(Debug, Clone)]
pub struct Read {
    /// The entries to send, in cursor order.
    pub entries: Vec<LogEntry>,
    /// Entries read past because the client holds them.
    pub spared: usize,
    pub more: bool,
    /// The resume point, page token and gap flag.
    pub answer: PageAnswer,
    plan: ReadPlan,
}

impl Read {
    /// The frame of one of [`Read::entries`]: with its cursor only when the read may hand that
    /// cursor out ([`ReadPlan::shows_cursor`]).
    pub fn frame(&self, entry: &LogEntry, replayed: bool) -> String {
        if self.plan.shows_cursor(entry.cursor) {
            entry.frame(replayed)
        } else {
            entry.frame_without_cursor(replayed)
        }
    }
}

/// The unread count: notifications after the read cursor not marked read, up to a cap. Read
/// marks are looked up by id, so the count costs the same however many marks a user has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unread {
    pub count: usize,
    pub capped: bool,
}

impl Replay {
    pub fn new(store: Store, retention_seconds: u64) -> Self {
        Self { store, retention_seconds }
    }

    /// The oldest cursor the retention window keeps: older entries may linger until TTL removes
    /// them, and are never replayed, so behaviour does not depend on when the sweeper ran.
    fn floor(&self) -> Cursor {
        Cursor::at_millis((epoch_seconds() as u64).saturating_sub(self.retention_seconds) * 1000)
    }

    pub async fn read(&self, req: ReadRequest<'_>) -> Result<Read, StoreError> {
        // The clock before the read: the position handed out must trail what was visible when
        // the read began (see `horizon`).
        let read_at = now_millis();
        let reader = match req.reader {
            Reader::Poller(_) => Reader::Poller(read_at),
            r => r,
        };
        let plan = ReadPlan::new(req.start, reader, self.floor(), read_at);
        let page = self.merged(req.tenant, req.user, req.topics, plan.from, req.limit).await?;
        let holdings = Holdings {
            have: req.have.iter().map(String::as_str).collect(),
            since: plan.since,
            visible_since: req.visible_since.iter().map(|(t, at)| (t.as_str(), *at)).collect(),
            user: req.user,
            connection: req.connection,
        };
        let ask: Vec<&str> = page
            .entries
            .iter()
            .filter(|e| holdings.decided_by_posting(e))
            .map(|e| e.id.as_str())
            .collect();
        let posted = if ask.is_empty() {
            HashMap::new()
        } else {
            self.store.idempotency.posted_at(req.tenant, &ask).await?
        };
        let answer = plan.answer(page.cursor, page.more, read_at);
        let total = page.entries.len();
        let entries: Vec<LogEntry> = page.entries.into_iter().filter(|e| !holdings.holds(e, posted.get(&e.id))).collect();
        Ok(Read {
            spared: total - entries.len(),
            entries,
            more: page.more,
            answer,
            plan,
        })
    }

    /// Marks `ids` read for the user (an `ack` frame, `POST /notifications/read`); the marks
    /// live as long as the log entries they are about.
    pub async fn mark_read(&self, tenant: &str, user: &str, ids: &[String]) -> Result<(), StoreError> {
        let expires = epoch_seconds() + self.retention_seconds as i64;
        self.store.read_state.mark_read(tenant, user, ids, expires).await
    }

    /// Moves the user's read cursor to `cursor`: everything up to it counts as read.
    pub async fn advance_read_cursor(&self, tenant: &str, user: &str, cursor: Cursor) -> Result<(), StoreError> {
        self.store.read_state.advance_cursor(tenant, user, cursor).await
    }

    /// What the user has not read yet, counted by id: a notification logged twice (a write
    /// redone under a fresh cursor, see `horizon`) is one.
    pub async fn unread(&self, tenant: &str, user: &str, topics: &[Group], cap: usize) -> Result<Unread, StoreError> {
        self.unread_with(tenant, user, topics, cap, false).await
    }

    /// [`Self::unread`]; `consistent`: the read marks are read strongly consistently, so the
    /// count sees every mark written before it began (the count a read sends to the user's
    /// devices, `services::inbox`).
    pub async fn unread_with(
        &self,
        tenant: &str,
        user: &str,
        topics: &[Group],
        cap: usize,
        consistent: bool,
    ) -> Result<Unread, StoreError> {
        let read_cursor = self.store.read_state.read_cursor(tenant, user).await?;
        let page = self.merged(tenant, user, topics, read_cursor.max(self.floor()), cap).await?;
        // A recall's tombstone is no notification to read.
        let ids: HashSet<&str> = page.entries.iter().filter(|e| !e.content.recalled).map(|e| e.id.as_str()).collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        // Only the marks of these ids are read: a user's marks (one per acked id) can be many.
        let read = self.store.read_state.read_among_with(tenant, user, &ids, consistent).await?;
        Ok(Unread {
            count: ids.iter().filter(|id| !read.contains(**id)).count(),
            capped: page.more,
        })
    }

    /// One page of every topic after `since`, merged.
    async fn merged(&self, tenant: &str, user: &str, topics: &[Group], since: Cursor, limit: usize) -> Result<ReplayPage, StoreError> {
        use futures_util::StreamExt;
        let store = &self.store;
        let pages: Vec<Result<LogPage, _>> = futures_util::stream::iter(topics.iter().cloned())
            .map(|t| async move { store.log.after(tenant, &t, user, since, limit + 1).await })
            .buffered(16)
            .collect()
            .await;
        let pages = pages.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(merge_pages(since, pages, limit))
    }
}
