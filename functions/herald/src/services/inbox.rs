//! An inbox that stays true on every device (issue #33).
//!
//! **Reading it** ([`Inbox`]): `GET /notifications/missed` and `/unread-count`, the replay
//! service over every topic the user may read.
//!
//! **Read sync** ([`ReadSync`]): a read on one device (`ack`, `POST /notifications/read`) is
//! posted to the user's other live connections as `{"type":"read","ids"|"upTo","unread","seq"}`.
//! The count must end exact when several devices read at once: each read takes the next number
//! of the user's read sequence (an atomic counter) *after* writing its marks, then counts with
//! strongly consistent reads. Every read with a lower number wrote its marks before this read
//! took its number, so this count sees them; the count of the highest number sees them all.
//! Clients keep the count of the highest `seq` they received (herald.js does), so every device
//! ends on the exact count whatever order the frames arrive in.
//!
//! **Update and recall** ([`Revisions`]): a producer's new version of a notification is logged
//! under a fresh cursor (so a device that was away finds it by `resume`/`missed` from any point
//! after the original), then made current by a conditional write on the notification's claim
//! (`version` only rises; a recalled one never changes), and only then are the old entries
//! removed: a late older update loses that condition and removes its own entries instead, so
//! the log never shows it, and nothing is posted for it. A recall logs a tombstone the same way
//! (replayed as `{"type":"recalled","id"}`), and escalation checks read the claim at their
//! deadline, so a recalled notification does not escalate.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::domain::auth::Principal;
use crate::domain::config::{FRAME_HARD_CAP, Limits};
use crate::domain::cursor::Cursor;
use crate::domain::frames;
use crate::domain::groups::Group;
use crate::domain::horizon::Horizon;
use crate::domain::inbox::MarkRead;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{Change, Content, LogEntry, Revision};
use crate::io::delivery::{Poster, fan_out};
use crate::io::store::{NotRevised, Store, StoreError, epoch_seconds};
use crate::services::broadcast::{BroadcastError, Broadcaster, Outgoing, Reach};
use crate::services::membership::readable_topics;
use crate::services::replay::{PageAnswer, ReadRequest, Reader, Replay, Start, Unread};

/// Connections of one user read for a read frame: the per-user cap is 20.
const USER_CONNECTIONS_READ: usize = 100;

/// Unread counts stop here ("99+" in a UI); counting further would read the whole log.
pub const UNREAD_CAP: usize = 1000;

/// A `missed` page holds this many notifications unless the poller asks for up to the max.
pub const MISSED_PAGE: usize = 50;
pub const MISSED_PAGE_MAX: usize = 200;

/// Log writes of a revision in a row that may land too late before it is left for redelivery.
const MAX_LATE_WRITES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    #[error("the revision's log write kept landing behind the visibility horizon; retry later")]
    LateLog,
    #[error("the notification is being delivered now; its revision is retried")]
    InProgress,
}

/// A user's inbox as a poller reads it.
#[derive(Clone, Debug)]
pub struct Inbox {
    store: Store,
    replay: Replay,
}

/// One page of `missed`: the notifications (their frames as JSON) and where the next poll goes on.
#[derive(Debug, Clone)]
pub struct Missed {
    pub items: Vec<Value>,
    pub answer: PageAnswer,
}

impl Inbox {
    pub fn new(store: Store, replay: Replay) -> Self {
        Self { store, replay }
    }

    /// A poller keeps `cursor` for its next poll (any cursor it received works too); `next`
    /// pages on from exactly what was read. What its cursor shows it has is read past.
    pub async fn missed(&self, p: &Principal, start: Start, limit: usize) -> Result<Missed, StoreError> {
        let topics = readable_topics(&self.store, p).await?;
        let read = self
            .replay
            .read(ReadRequest {
                tenant: &p.tenant,
                user: &p.user,
                topics: &topics,
                start,
                reader: Reader::Poller(0),
                limit,
                have: &[],
                visible_since: HashMap::new(),
                connection: "",
            })
            .await?;
        let items = read
            .entries
            .iter()
            .map(|e| serde_json::from_str(&read.frame(e, false)).unwrap_or(Value::Null))
            .collect();
        Ok(Missed {
            items,
            answer: read.answer,
        })
    }

    /// The user's unread count, up to [`UNREAD_CAP`].
    pub async fn unread(&self, p: &Principal) -> Result<Unread, StoreError> {
        let topics = readable_topics(&self.store, p).await?;
        self.replay.unread(&p.tenant, &p.user, &topics, UNREAD_CAP).await
    }
}

/// What a read was: ids marked read, and/or everything up to a cursor.
#[derive(Debug, Clone, Default)]
pub struct ReadMarks<'a> {
    pub ids: Option<&'a [String]>,
    pub up_to: Option<Cursor>,
}

impl<'a> From<&'a MarkRead> for ReadMarks<'a> {
    fn from(r: &'a MarkRead) -> Self {
        Self {
            ids: r.ids.as_deref(),
            up_to: r.up_to,
        }
    }
}

/// What a read left: the user's unread count after it and the read's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadDone {
    pub unread: usize,
    pub capped: bool,
    pub seq: u64,
    /// The user's other connections posted the read frame.
    pub told: usize,
}

#[derive(Clone, Debug)]
pub struct ReadSync {
    store: Store,
    replay: Replay,
    poster: Poster,
    concurrency: usize,
}

impl ReadSync {
    pub fn new(store: Store, replay: Replay, poster: Poster, limits: &Limits) -> Self {
        Self {
            store,
            replay,
            poster,
            concurrency: limits.fanout_concurrency,
        }
    }

    /// Writes the read, counts what is left and tells the user's other connections (all of
    /// them but `from`, the connection the read came over, if any).
    pub async fn read(&self, p: &Principal, marks: ReadMarks<'_>, from: Option<&str>) -> Result<ReadDone, InboxError> {
        let (tenant, user) = (p.tenant.as_str(), p.user.as_str());
        if let Some(ids) = marks.ids {
            self.replay.mark_read(tenant, user, ids).await?;
        }
        if let Some(cursor) = marks.up_to {
            self.replay.advance_read_cursor(tenant, user, cursor).await?;
        }
        // The number after the marks: see the module documentation.
        let seq = self.store.inbox.next_read_seq(tenant, user).await?;
        let topics = readable_topics(&self.store, p).await?;
        let unread = self.replay.unread_with(tenant, user, &topics, UNREAD_CAP, true).await?;
        let frame = read_frame(&marks, unread.count, unread.capped, seq);
        let key = Group::user(user).key(tenant);
        let page = self.store.connections.members_page(&key, 0, None, USER_CONNECTIONS_READ).await?;
        let others: Vec<String> = page
            .members
            .into_iter()
            .map(|m| m.connection_id)
            .filter(|c| Some(c.as_str()) != from)
            .collect();
        // One attempt each: a device that misses it counts again on its next read or resume
        // (the count is also `GET /notifications/unread-count`); a gone one is cleaned up by the
        // next notification's fan-out, which has the membership rows to remove.
        let report = fan_out(&self.poster, others, &frame, self.concurrency).await;
        Metrics::new("inbox").count("ReadSynced", report.delivered).flush();
        Ok(ReadDone {
            unread: unread.count,
            capped: unread.capped,
            seq,
            told: report.delivered,
        })
    }

    /// An `ack` frame over connection `from`: its ids marked read, answered with `acked` (how
    /// many, the unread count after it, the read's number). Also answers the posts to charge
    /// the user's work budget: one a mark, one a device told.
    pub async fn ack(&self, p: &Principal, ids: &[String], from: &str, reference: Option<Value>) -> Result<(String, usize), InboxError> {
        let marks = ReadMarks {
            ids: Some(ids),
            up_to: None,
        };
        let done = self.read(p, marks, Some(from)).await?;
        let mut m = Map::new();
        m.insert("count".into(), ids.len().into());
        m.insert("unread".into(), done.unread.into());
        m.insert("seq".into(), done.seq.into());
        Ok((frames::reply("acked", m, reference), ids.len() + done.told))
    }
}

/// `{"type":"read","ids":[...]|"upTo":CURSOR,"unread":N,"capped":bool,"seq":S}`.
pub fn read_frame(marks: &ReadMarks<'_>, unread: usize, capped: bool, seq: u64) -> String {
    let mut m = Map::new();
    m.insert("type".into(), "read".into());
    if let Some(ids) = marks.ids {
        m.insert("ids".into(), json!(ids));
    }
    if let Some(c) = marks.up_to {
        m.insert("upTo".into(), c.to_string().into());
    }
    m.insert("unread".into(), unread.into());
    if capped {
        m.insert("capped".into(), true.into());
    }
    m.insert("seq".into(), seq.into());
    Value::Object(m).to_string()
}

/// Why `id` cannot be revised now, if it cannot: not a notification of `tenant` that was
/// delivered, or recalled. What the HTTP API answers 404/409 on before queueing anything.
pub async fn unrevisable(store: &Store, tenant: &str, id: &str) -> Result<Option<NotRevised>, StoreError> {
    Ok(match store.inbox.revision_state(tenant, id).await? {
        // Being delivered: dispatch applies the revision once it is (redelivered until then).
        Err(NotRevised::InProgress) => None,
        Err(why) => Some(why),
        Ok(r) if r.recalled => Some(NotRevised::Recalled),
        Ok(_) => None,
    })
}

/// What became of a producer's update or recall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revised {
    /// Logged, made current and posted to the live connections (how many took it).
    Updated {
        version: u64,
        delivered: usize,
    },
    Recalled {
        delivered: usize,
    },
    /// Changed nothing, and why.
    Refused(NotRevised),
    /// The update makes the frame bigger than the payload budget: nothing changed.
    TooLarge {
        size: usize,
        budget: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Revisions {
    store: Store,
    broadcaster: Broadcaster,
    horizon: Horizon,
    retention_seconds: u64,
    payload_budget: usize,
}

impl Revisions {
    pub fn new(store: Store, broadcaster: Broadcaster, limits: &Limits) -> Self {
        Self {
            store,
            broadcaster,
            horizon: Horizon::default(),
            retention_seconds: limits.retention_seconds,
            payload_budget: limits.payload_budget.min(FRAME_HARD_CAP),
        }
    }

    pub async fn revise(&self, r: &Revision) -> Result<Revised, InboxError> {
        let (tenant, id) = (r.tenant.as_str(), r.id.as_str());
        let current = match self.store.inbox.revision_state(tenant, id).await? {
            Ok(current) => current,
            Err(why) => return Ok(Revised::Refused(why)),
        };
        if current.recalled {
            return Ok(Revised::Refused(NotRevised::Recalled));
        }
        let version = match &r.change {
            Change::Update { version, .. } if *version <= current.version => {
                return Ok(Revised::Refused(NotRevised::Stale { stored: current.version }));
            }
            Change::Update { version, .. } => Some(*version),
            Change::Recall => None,
        };
        let Some(topic) = current.topics.first() else {
            return Ok(Revised::Refused(NotRevised::NotFound));
        };
        let Some(entry) = self.store.log.entry(tenant, topic, current.logged).await? else {
            // Expired, or replaced by a revision that is landing right now.
            return Ok(Revised::Refused(NotRevised::NotFound));
        };
        let content = match &r.change {
            Change::Update { version, fields } => fields.apply(&entry.content, *version),
            Change::Recall => Content {
                event: entry.content.event.clone(),
                recalled: true,
                ..Content::default()
            },
        };
        let probe = LogEntry {
            cursor: Cursor::MIN,
            topic: current
                .topics
                .iter()
                .map(Group::to_string)
                .max_by_key(String::len)
                .unwrap_or_default(),
            content: content.clone(),
            ..entry.clone()
        };
        let size = probe.frame(true).len();
        if size > self.payload_budget {
            return Ok(Revised::TooLarge {
                size,
                budget: self.payload_budget,
            });
        }
        let expires = epoch_seconds() + self.retention_seconds as i64;
        let mut attempts = 0;
        let (cursor, entries) = loop {
            let cursor = Cursor::now();
            let entries: Vec<(Group, LogEntry)> = current
                .topics
                .iter()
                .map(|t| {
                    let e = LogEntry {
                        id: id.to_owned(),
                        cursor,
                        topic: t.to_string(),
                        content: content.clone(),
                        created_at: entry.created_at.clone(),
                    };
                    (t.clone(), e)
                })
                .collect();
            self.store.log.append(tenant, &entries, expires).await?;
            if self.horizon.landed_now(cursor) {
                break (cursor, entries);
            }
            self.store.log.remove(tenant, &current.topics, cursor).await?;
            attempts += 1;
            if attempts >= MAX_LATE_WRITES {
                return Err(InboxError::LateLog);
            }
        };
        let made = match version {
            Some(v) => self.store.inbox.revise(tenant, id, v, cursor).await?,
            None => self.store.inbox.recall(tenant, id, cursor).await?,
        };
        let old = match made {
            Ok(old) => old,
            Err(refused) => {
                // A newer revision (or a recall) won the race: this one leaves no trace.
                self.store.log.remove(tenant, &current.topics, cursor).await?;
                return Ok(Revised::Refused(refused));
            }
        };
        self.store.log.remove(tenant, &old.topics, old.logged).await?;
        let frames: Vec<Outgoing> = entries
            .iter()
            .map(|(g, e)| {
                let mut out = Outgoing::entry(g.clone(), e);
                // The collapse pointer names the original entry; the revision is not a new value.
                out.collapse = None;
                out
            })
            .collect();
        // Its own fan-out key: jobs and retries of a big group are claimed per key, and the
        // original's are done. U+001F cannot occur in a producer id.
        let key = match version {
            Some(v) => format!("{id}\u{1f}v{v}"),
            None => format!("{id}\u{1f}recall"),
        };
        let summary = self.broadcaster.fan_out(tenant, &key, &frames, Reach::default()).await?;
        let mut m = Metrics::new("dispatch");
        m.count(if version.is_some() { "Updated" } else { "Recalled" }, 1).flush();
        tracing::info!(%tenant, %id, ?version, delivered = summary.delivered, "revised");
        Ok(match version {
            Some(version) => Revised::Updated {
                version,
                delivered: summary.delivered,
            },
            None => Revised::Recalled {
                delivered: summary.delivered,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_frame_has_the_contract_shape() {
        let ids = vec!["n1".to_owned()];
        let v: Value = serde_json::from_str(&read_frame(
            &ReadMarks {
                ids: Some(&ids),
                up_to: None,
            },
            3,
            false,
            7,
        ))
        .unwrap();
        assert_eq!(v, json!({"type": "read", "ids": ["n1"], "unread": 3, "seq": 7}));
        let v: Value = serde_json::from_str(&read_frame(
            &ReadMarks {
                ids: None,
                up_to: Some(Cursor::MIN),
            },
            1000,
            true,
            8,
        ))
        .unwrap();
        assert_eq!(v["upTo"], Cursor::MIN.to_string());
        assert_eq!(v["capped"], true);
    }
}
