//! Chat (issue #32; docs/interactive.md, "Chat"): room history, read receipts, shared files.
//! Every entry point checks that the caller is entitled to the group by the rule `join` uses
//! ([`entitled`]), so a chat screen can only read, mark or share in rooms its user may join.
//!
//! - [`History`]: a group's log, newest first, page by page backwards (`before`), the entries
//!   `resume` would give (expired ones and superseded latest-value entries left out).
//! - [`Receipts`]: a member's last-read cursor per group, forward only, pushed to the other
//!   members' live connections as `receipt` frames — at most one a second per member and group
//!   (a faster reader's last receipt goes out a second later, from a flush on the internal
//!   queue), to at most `receipt_max_members` live connections, each post on the reader's work
//!   budget.
//! - [`Sharing`]: presigned S3 URLs for uploads and downloads, after the checks.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::domain::auth::Principal;
use crate::domain::chat::{self, UploadError, UploadRequest};
use crate::domain::config::{ChatSettings, Limits, Uploads};
use crate::domain::cursor::{Cursor, now_millis};
use crate::domain::frames::{self, ErrorCode, ErrorFrame};
use crate::domain::groups::Group;
use crate::domain::horizon::SKEW_MS;
use crate::domain::inbox;
use crate::domain::metrics::Metrics;
use crate::domain::notification::LogEntry;
use crate::domain::policy::RolePolicy;
use crate::io::delivery::{Poster, fan_out};
use crate::io::objects::{Objects, ObjectsError, Presigned};
use crate::io::queue::{Queue, QueueError, ReceiptFlush};
use crate::io::store::{FileRecord, Receipt, Store, StoreError, epoch_seconds};
use crate::services::limiter::Limiter;
use crate::services::membership::entitled;
use crate::services::presence::{Presence, PresenceError};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// Over the user's work budget: nothing was done; try again in this many ms.
    #[error("work budget exceeded; try again in {0} ms")]
    RateLimited(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    Objects(#[from] ObjectsError),
}

impl ChatError {
    /// The error frame a refusal is answered with over the socket; `Err(self)` for a failure
    /// below (storage, queue), which fails the invocation instead.
    pub fn refusal(self, reference: Option<Value>) -> Result<ErrorFrame, ChatError> {
        Ok(match self {
            ChatError::BadRequest(m) => ErrorFrame::new(ErrorCode::BadRequest, m, reference),
            ChatError::Forbidden(m) | ChatError::NotFound(m) => ErrorFrame::new(ErrorCode::Forbidden, m, reference),
            ChatError::RateLimited(ms) => ErrorFrame::rate_limited(ms, reference),
            other => return Err(other),
        })
    }
}

/// Posts in flight while pushing a receipt (groups are small: at most the member cap).
const CONCURRENCY: usize = 16;
/// Receipt rows counted at most for a big group's counts.
const COUNTED: usize = 10_000;
/// How long upload and download URLs work: long enough to start a slow upload, short enough
/// that a URL pasted elsewhere soon stops working.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(300);
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(60);

/// The group a caller names, checked: well formed, and the caller entitled to it as to a join.
async fn member_group(store: &Store, roles: &RolePolicy, p: &Principal, name: &str) -> Result<Group, ChatError> {
    let group = Group::parse(name).map_err(|e| ChatError::BadRequest(e.to_string()))?;
    if group == Group::All {
        return Err(ChatError::Forbidden("all is producer-only".into()));
    }
    if !entitled(store, roles, p, &group).await? {
        return Err(ChatError::Forbidden(format!("not a member of {group}")));
    }
    Ok(group)
}

// --- history ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct History {
    store: Store,
    roles: RolePolicy,
    retention_seconds: u64,
}

/// One page of a group's history: notification frames, newest first, and where to continue.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub group: String,
    pub items: Vec<Value>,
    /// Pass as `before` for the older page; `None`: this was the oldest.
    pub next: Option<String>,
}

impl History {
    pub fn new(store: Store, roles: RolePolicy, limits: &Limits) -> Self {
        Self {
            store,
            roles,
            retention_seconds: limits.retention_seconds,
        }
    }

    /// The page of `group` before `before` (a cursor, or the previous page's `next`).
    ///
    /// Pages are cut on cursors: each ends strictly before where the previous one ended, so
    /// messages arriving meanwhile (newer than any page) can neither repeat an entry nor push
    /// one out of a page. An item claimed in the last [`SKEW_MS`] before the read carries no
    /// cursor, as in `missed`: handed out, it could be taken for a resume point past an entry
    /// of another topic still landing.
    pub async fn page(&self, p: &Principal, group: &str, before: Option<&str>, limit: usize) -> Result<HistoryPage, ChatError> {
        let before = chat::parse_before(before).map_err(|e| ChatError::BadRequest(e.to_string()))?;
        let group = member_group(&self.store, &self.roles, p, group).await?;
        let began = now_millis();
        let floor = Cursor::at_millis((epoch_seconds() as u64).saturating_sub(self.retention_seconds) * 1000);
        let page = self
            .store
            .log
            .before(&p.tenant, &group, &p.user, before, floor, limit.clamp(1, chat::HISTORY_MAX))
            .await?;
        let entries = self.current(&p.tenant, &group, page.entries).await?;
        let items = entries
            .iter()
            .map(|e| {
                let frame = if e.cursor.millis() + SKEW_MS <= began {
                    e.frame(false)
                } else {
                    e.frame_without_cursor(false)
                };
                serde_json::from_str(&frame).unwrap_or(Value::Null)
            })
            .collect();
        Ok(HistoryPage {
            group: group.to_string(),
            items,
            next: page.more.then_some(page.last_read).flatten().map(chat::history_token),
        })
    }

    /// What `resume` would show of these entries (newest first): one copy per id, and of a
    /// latest-value key only its latest — checked against the key's record, since the newer
    /// entry may be on a page read before this one.
    async fn current(&self, tenant: &str, group: &Group, entries: Vec<LogEntry>) -> Result<Vec<LogEntry>, StoreError> {
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            if !ids.insert(e.id.clone()) {
                continue;
            }
            if let Some(key) = &e.content.collapse {
                if !keys.insert(key.clone()) {
                    continue;
                }
                if self
                    .store
                    .log
                    .latest(tenant, group, key)
                    .await?
                    .is_some_and(|latest| latest > e.cursor)
                {
                    continue;
                }
            }
            kept.push(e);
        }
        Ok(kept)
    }
}

// --- receipts -----------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Receipts {
    store: Store,
    queue: Queue,
    poster: Poster,
    presence: Presence,
    roles: RolePolicy,
    /// The users' work budget (`Limiter::with_work`).
    limiter: Limiter,
    settings: ReceiptSettings,
}

/// The numbers receipts work with, from the limits and chat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptSettings {
    pub max_members: usize,
    pub shards: u16,
    pub retention_seconds: u64,
}

impl ReceiptSettings {
    pub fn new(limits: &Limits, chat: &ChatSettings) -> Self {
        Self {
            max_members: chat.receipt_max_members,
            shards: limits.membership_shards,
            retention_seconds: limits.retention_seconds,
        }
    }
}

/// What a `read` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub group: String,
    /// The member's last-read cursor now (the stored one when `upTo` was not ahead of it).
    pub up_to: Cursor,
    /// Whether this read moved it.
    pub advanced: bool,
}

impl Marked {
    /// `{"type":"marked","group","upTo","advanced","ref"}`: the answer to a `read` frame.
    pub fn frame(&self, reference: Option<Value>) -> String {
        let mut m = Map::new();
        m.insert("group".into(), self.group.clone().into());
        m.insert("upTo".into(), self.up_to.to_string().into());
        m.insert("advanced".into(), self.advanced.into());
        frames::reply("marked", m, reference)
    }
}

/// `GET /groups/{group}/receipts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptList {
    /// Up to the member cap: each reader's cursor.
    Members(Vec<Receipt>),
    /// A bigger group: how many readers, and (`capped`) whether there were more than counted.
    Counts {
        readers: usize,
        capped: bool,
        receipts: Vec<Receipt>,
    },
}

impl ReceiptList {
    /// How many of the receipts listed are at `up_to` or past it (in counts mode, of those
    /// counted).
    pub fn seen(&self, up_to: Cursor) -> usize {
        let (ReceiptList::Members(all) | ReceiptList::Counts { receipts: all, .. }) = self;
        all.iter().filter(|r| r.up_to >= up_to).count()
    }
}

impl Receipts {
    pub fn new(
        store: Store,
        queue: Queue,
        poster: Poster,
        presence: Presence,
        roles: RolePolicy,
        limiter: Limiter,
        settings: ReceiptSettings,
    ) -> Self {
        Self {
            store,
            queue,
            poster,
            presence,
            roles,
            limiter,
            settings,
        }
    }

    /// `p` has read `group` up to `up_to` (a `read` frame, `POST /groups/{group}/read`).
    /// `received_ms`: when API Gateway received it (what the work budget is charged at).
    pub async fn mark(&self, p: &Principal, group: &str, up_to: &str, received_ms: i64) -> Result<Marked, ChatError> {
        let cursor = inbox::up_to(up_to, now_millis()).map_err(|e| ChatError::BadRequest(e.to_string()))?;
        let group = member_group(&self.store, &self.roles, p, group).await?;
        // The most this read can post is one receipt to each of the cap's connections: reserved
        // before anything is done, settled at what it posted.
        let reserved = self.settings.max_members;
        if let Some(ms) = self.limiter.admit_work(&p.tenant, &p.user, received_ms, reserved).await? {
            return Err(ChatError::RateLimited(ms));
        }
        let result = self.mark_admitted(p, &group, cursor).await;
        let posts = result.as_ref().map_or(0, |(_, posts)| *posts);
        self.limiter.settle_work(&p.tenant, &p.user, reserved, posts).await?;
        result.map(|(marked, _)| marked)
    }

    async fn mark_admitted(&self, p: &Principal, group: &Group, cursor: Cursor) -> Result<(Marked, usize), ChatError> {
        let key = group.key(&p.tenant);
        let expires = epoch_seconds() + self.settings.retention_seconds as i64;
        let (stored, advanced) = self.store.receipts.advance(&key, &p.user, cursor, expires).await?;
        let mut posts = 0;
        if advanced {
            let now = now_millis();
            if self
                .store
                .receipts
                .open_gate(&key, &p.user, cursor, now, chat::RECEIPT_WINDOW_MS)
                .await?
            {
                posts = self.announce(&p.tenant, group, &p.user, cursor).await?;
            } else if self.store.receipts.set_pending(&key, &p.user, now).await? {
                // Within the window: the latest goes out once the window is over.
                let flush = ReceiptFlush {
                    tenant: p.tenant.clone(),
                    group: group.to_string(),
                    reader: p.user.clone(),
                };
                self.queue.receipt_flush(&flush, chat::RECEIPT_WINDOW_MS.div_ceil(1000)).await?;
            }
        }
        Ok((
            Marked {
                group: group.to_string(),
                up_to: stored,
                advanced,
            },
            posts,
        ))
    }

    /// A queued flush (dispatch): pushes the reader's latest receipt if it was not pushed yet,
    /// charging the posts to the reader's work budget (there is no caller to refuse now; the
    /// `read` that queued it was admitted). Answers how many posts it made.
    pub async fn flush(&self, f: &ReceiptFlush) -> Result<usize, ChatError> {
        let Ok(group) = Group::parse(&f.group) else {
            tracing::error!(group = %f.group, "receipt flush names no group; dropped");
            return Ok(0);
        };
        let Some(up_to) = self
            .store
            .receipts
            .take_pending(&group.key(&f.tenant), &f.reader, now_millis())
            .await?
        else {
            return Ok(0);
        };
        let posts = self.announce(&f.tenant, &group, &f.reader, up_to).await?;
        self.limiter.settle_work(&f.tenant, &f.reader, 0, posts).await?;
        Ok(posts)
    }

    /// Every member's last-read cursor, or counts for a group above the member cap.
    pub async fn list(&self, p: &Principal, group: &str) -> Result<(String, ReceiptList), ChatError> {
        let group = member_group(&self.store, &self.roles, p, group).await?;
        let page = self.store.receipts.list(&group.key(&p.tenant), COUNTED).await?;
        let list = if page.receipts.len() <= self.settings.max_members {
            ReceiptList::Members(page.receipts)
        } else {
            ReceiptList::Counts {
                readers: page.receipts.len(),
                capped: page.more,
                receipts: page.receipts,
            }
        };
        Ok((group.to_string(), list))
    }

    /// Posts the receipt to the group's live connections but the reader's own, unless the
    /// group has more than the member cap; answers how many posts it made.
    async fn announce(&self, tenant: &str, group: &Group, reader: &str, up_to: Cursor) -> Result<usize, ChatError> {
        let key = group.key(tenant);
        let cap = self.settings.max_members;
        let mut members = Vec::new();
        for shard in 0..group.shards(self.settings.shards) {
            let page = self
                .store
                .connections
                .members_page(&key, shard, None, cap + 1 - members.len())
                .await?;
            members.extend(page.members);
            if members.len() > cap {
                Metrics::new(self.presence.function()).count("ReceiptsSkipped", 1).flush();
                return Ok(0);
            }
        }
        let targets: Vec<String> = members.into_iter().filter(|m| m.user != reader).map(|m| m.connection_id).collect();
        let posts = targets.len();
        let report = fan_out(&self.poster, targets, &chat::receipt_frame(group, reader, up_to), CONCURRENCY).await;
        let gone = self.store.connections.close_gone(&report.gone, now_millis()).await?;
        self.presence.closed(&gone.closed).await?;
        // Not retried: the next receipt (or the receipts query) carries the same or newer news.
        Metrics::new(self.presence.function())
            .count("Receipts", 1)
            .count("ReceiptsDelivered", report.delivered)
            .flush();
        Ok(posts)
    }
}

// --- shared files -------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Sharing {
    store: Store,
    roles: RolePolicy,
    /// `None`: no bucket configured, uploads are off.
    uploads: Option<(Uploads, Objects)>,
}

/// What `POST /uploads` answers: where to PUT the file, and the key a chat message carries.
#[derive(Debug, Clone)]
pub struct Upload {
    pub key: String,
    pub put: Presigned,
}

/// What `GET /uploads/{key}` answers.
#[derive(Debug, Clone)]
pub struct Download {
    pub file: FileRecord,
    pub get: Presigned,
}

impl Sharing {
    pub fn new(store: Store, roles: RolePolicy, sdk: &aws_config::SdkConfig, chat: &ChatSettings) -> Self {
        let uploads = chat.uploads.clone().map(|u| {
            let objects = Objects::new(sdk, u.bucket.clone());
            (u, objects)
        });
        Self { store, roles, uploads }
    }

    fn configured(&self) -> Result<&(Uploads, Objects), ChatError> {
        self.uploads
            .as_ref()
            .ok_or_else(|| ChatError::NotFound("file sharing is not configured".into()))
    }

    /// Checks an upload (shape, size and type limits, then membership) and answers a presigned
    /// PUT for a fresh key under the caller's tenant and user. A refusal makes no URL.
    pub async fn upload(&self, p: &Principal, body: &Value) -> Result<Upload, ChatError> {
        let (settings, objects) = self.configured()?;
        let req = UploadRequest::parse(body, &settings.limits).map_err(|e| match e {
            UploadError::BadRequest(m) => ChatError::BadRequest(m),
            other => ChatError::BadRequest(other.to_string()),
        })?;
        let group = member_group(&self.store, &self.roles, p, &req.group.to_string()).await?;
        let key = chat::upload_key(&p.tenant, &p.user, &Cursor::now().to_string(), &req.name);
        let file = FileRecord {
            key: key.clone(),
            tenant: p.tenant.clone(),
            group: group.to_string(),
            user: p.user.clone(),
            name: req.name,
            content_type: req.content_type,
            size: req.size,
        };
        // The record first: a URL is never handed out for a file nobody could download.
        let expires = epoch_seconds() + i64::from(settings.expiry_days) * 86_400;
        self.store.files.put(&file, expires).await?;
        let put = objects.presign_put(&key, &file.content_type, file.size, UPLOAD_URL_TTL).await?;
        Metrics::new("api").count("Uploads", 1).flush();
        Ok(Upload { key, put })
    }

    /// A short-lived presigned GET of a shared file, for users entitled to the group it was
    /// shared in. Another tenant's key, or one never handed out, is 404 (not 403: whether a
    /// key exists is not for outsiders to learn).
    pub async fn download(&self, p: &Principal, key: &str) -> Result<Download, ChatError> {
        let (_, objects) = self.configured()?;
        let not_found = || ChatError::NotFound("no such file".into());
        if chat::key_tenant(key) != Some(p.tenant.as_str()) {
            return Err(not_found());
        }
        let file = self.store.files.get(key).await?.ok_or_else(not_found)?;
        if file.tenant != p.tenant {
            return Err(not_found());
        }
        member_group(&self.store, &self.roles, p, &file.group).await?;
        let get = objects.presign_get(key, &file.name, &file.content_type, DOWNLOAD_URL_TTL).await?;
        Ok(Download { file, get })
    }
}
