//! Per-user and per-notification state in `NotificationsTable`.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | idempotency key | `i#{tenant}#{id}` | `#` |
//! | durable subscription | `s#{tenant}#{user}` | `{group}` |
//! | read mark | `r#{tenant}#{user}` | `m#{id}` |
//! | read cursor | `r#{tenant}#{user}` | `#cursor` |
//! | reminder | `m#{tenant}#{id}` | `#` |

use std::collections::HashSet;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{Item, StoreError, Table, conditional_failed, get_s, n, put_request, s};
use crate::domain::cursor::Cursor;
use crate::domain::groups::Group;

/// The outcome of claiming a notification id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First time: proceed with this cursor.
    New(Cursor),
    /// Claimed before, never finished, and the claim's lease has run out (the claimer crashed or
    /// timed out): log and push again with the original cursor; clients dedupe on the id.
    Unfinished(Cursor),
    /// Another invocation holds a live claim (a concurrent duplicate, or one that crashed and
    /// whose lease has not run out): try again once the lease ends, in about this many ms.
    InProgress { lease_left_ms: u64 },
    /// Already logged and pushed: skip.
    Done(Cursor),
}

#[derive(Clone, Debug)]
pub struct Idempotency {
    table: Table,
}

impl Idempotency {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    fn key(tenant: &str, id: &str) -> String {
        format!("i#{tenant}#{id}")
    }

    /// Claims `id` with `cursor` if nobody has; otherwise reports the stored state. A claim is a
    /// lease of `lease_ms`: an unfinished claim older than that is taken over (conditionally, so
    /// only one taker wins).
    pub async fn claim(&self, tenant: &str, id: &str, cursor: Cursor, expires_at: i64, lease_ms: u64) -> Result<Claim, StoreError> {
        let now = crate::domain::cursor::now_millis();
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::key(tenant, id)))
            .item("sk", s("#"))
            .item("cursor", s(cursor.to_string()))
            .item("state", s("logging"))
            .item("claimedAt", n(now))
            .item("expiresAt", n(expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Claim::New(cursor)),
            Err(e) if conditional_failed(&e) => {}
            Err(e) => return Err(StoreError::dynamo("PutItem", e)),
        }
        let item = self.table.get(Self::key(tenant, id), "#").await?;
        let item = item.ok_or_else(|| StoreError::Corrupt(format!("idempotency key {id} vanished")))?;
        let stored = get_s(&item, "cursor")?
            .parse::<Cursor>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if get_s(&item, "state")? == "done" {
            return Ok(Claim::Done(stored));
        }
        let claimed_at = super::get_n(&item, "claimedAt").unwrap_or(0);
        let held_ms = now.saturating_sub(claimed_at as u64);
        if held_ms < lease_ms {
            return Ok(Claim::InProgress {
                lease_left_ms: lease_ms - held_ms,
            });
        }
        let takeover = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::key(tenant, id)))
            .key("sk", s("#"))
            .update_expression("SET claimedAt = :now")
            .condition_expression("claimedAt = :then AND #s <> :done")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":then", n(claimed_at))
            .expression_attribute_values(":done", s("done"))
            .send()
            .await;
        match takeover {
            Ok(_) => Ok(Claim::Unfinished(stored)),
            // Another invocation took it over first: its lease has just begun.
            Err(e) if conditional_failed(&e) => Ok(Claim::InProgress { lease_left_ms: lease_ms }),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// Whether a notification with this id was ever claimed.
    pub async fn exists(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let item = self.table.get(Self::key(tenant, id), "#").await?;
        Ok(item.is_some())
    }

    /// Marks the notification logged and pushed (every live recipient posted, or handed to the
    /// retry queue or a fan-out shard). `posted`: when every member connection had taken the
    /// frame, was closed, or answered 410 inside its `$connect` (those are listed), if that is
    /// known: a resume reads past the entry for a client holding a cursor newer than that (see
    /// `replay::spare`).
    pub async fn finish(&self, tenant: &str, id: &str, posted: Option<&Posted>) -> Result<(), StoreError> {
        self.finish_logged(tenant, id, posted, None).await
    }

    /// [`Self::finish`], recording where the notification's entries are (`logged`: their cursor
    /// and topics) so a producer can update or recall it later (`store::inbox`).
    pub async fn finish_logged(
        &self,
        tenant: &str,
        id: &str,
        posted: Option<&Posted>,
        logged: Option<(Cursor, &[Group])>,
    ) -> Result<(), StoreError> {
        let (extra, values) = match logged {
            Some((cursor, topics)) => {
                let [(_, l), (_, t)] = super::inbox::logged_attributes(cursor, topics);
                (", logged = if_not_exists(logged, :lc), topics = :lt", vec![(":lc", l), (":lt", t)])
            }
            None => ("", Vec::new()),
        };
        let mut update = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::key(tenant, id)))
            .key("sk", s("#"))
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":done", s("done"));
        for (k, v) in values {
            update = update.expression_attribute_values(k, v);
        }
        let update = match posted {
            Some(p) if p.missed_by.is_empty() => update
                .update_expression(format!("SET #s = :done, postedAt = :at{extra}"))
                .expression_attribute_values(":at", n(p.at)),
            Some(p) => update
                .update_expression(format!("SET #s = :done, postedAt = :at, missedBy = :m{extra}"))
                .expression_attribute_values(":at", n(p.at))
                .expression_attribute_values(":m", AttributeValue::Ss(p.missed_by.clone())),
            None => update.update_expression(format!("SET #s = :done{extra}")),
        };
        update.send().await.map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(())
    }

    /// When each of `ids` was posted to all of its live recipients ([`Self::finish`]), for those
    /// where that is known. Eventually consistent: an id read before its `finish` landed is
    /// simply not in the answer.
    pub async fn posted_at(&self, tenant: &str, ids: &[&str]) -> Result<std::collections::HashMap<String, Posted>, StoreError> {
        let keys: Vec<(String, String)> = ids.iter().map(|id| (Self::key(tenant, id), "#".to_owned())).collect();
        let prefix = Self::key(tenant, "");
        let mut out = std::collections::HashMap::new();
        for item in self.table.batch_get(&keys, "pk, postedAt, missedBy").await? {
            if let (Ok(pk), Ok(at)) = (get_s(&item, "pk"), super::get_n(&item, "postedAt"))
                && let Some(id) = pk.strip_prefix(&prefix)
            {
                let missed_by = match item.get("missedBy") {
                    Some(AttributeValue::Ss(set)) => set.clone(),
                    _ => Vec::new(),
                };
                out.insert(id.to_owned(), Posted { at: at as u64, missed_by });
            }
        }
        Ok(out)
    }
}

/// When a fan-out had posted to every member connection (epoch ms), and the connections that
/// answered 410 inside their `$connect`: they may open without the frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Posted {
    pub at: u64,
    pub missed_by: Vec<String>,
}

/// Durable entitlements written by services (e.g. enrollment sync).
#[derive(Clone, Debug)]
pub struct Subscriptions {
    table: Table,
}

impl Subscriptions {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    fn key(tenant: &str, user: &str) -> String {
        format!("s#{tenant}#{user}")
    }

    pub async fn subscribe(&self, tenant: &str, user: &str, group: &Group) -> Result<(), StoreError> {
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::key(tenant, user)))
            .item("sk", s(group.to_string()))
            .item("createdAt", s(crate::domain::notification::now_rfc3339()))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        Ok(())
    }

    /// Returns whether the subscription existed.
    pub async fn unsubscribe(&self, tenant: &str, user: &str, group: &Group) -> Result<bool, StoreError> {
        let out = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::key(tenant, user)))
            .key("sk", s(group.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DeleteItem", e))?;
        Ok(out.attributes.is_some())
    }

    pub async fn exists(&self, tenant: &str, user: &str, group: &Group) -> Result<bool, StoreError> {
        let item = self.table.get(Self::key(tenant, user), &group.to_string()).await?;
        Ok(item.is_some())
    }

    pub async fn list(&self, tenant: &str, user: &str) -> Result<Vec<Group>, StoreError> {
        let items = self.table.query_partition(&Self::key(tenant, user)).await?;
        let mut groups = Vec::with_capacity(items.len());
        for item in items {
            // Names were validated on write; skip rather than fail a connect on a bad row.
            if let Ok(g) = Group::parse(get_s(&item, "sk")?) {
                groups.push(g);
            }
        }
        Ok(groups)
    }
}

/// Read marks (`ack`, `POST /notifications/read`) and the read cursor.
#[derive(Clone, Debug)]
pub struct ReadState {
    table: Table,
}

impl ReadState {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    fn key(tenant: &str, user: &str) -> String {
        format!("r#{tenant}#{user}")
    }

    pub async fn mark_read(&self, tenant: &str, user: &str, ids: &[String], expires_at: i64) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for id in ids.iter().filter(|id| seen.insert(id.as_str())) {
            let item = Item::from([
                ("pk".into(), s(Self::key(tenant, user))),
                ("sk".into(), s(format!("m#{id}"))),
                ("expiresAt".into(), n(expires_at)),
            ]);
            writes.push(put_request(item)?);
        }
        self.table.batch_write(writes).await
    }

    /// Everything up to and including `cursor` counts as read; only moves forward.
    pub async fn advance_cursor(&self, tenant: &str, user: &str, cursor: Cursor) -> Result<(), StoreError> {
        let res = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::key(tenant, user)))
            .item("sk", s("#cursor"))
            .item("cursor", s(cursor.to_string()))
            .condition_expression("attribute_not_exists(pk) OR #c < :c")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":c", s(cursor.to_string()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::dynamo("PutItem", e)),
        }
    }

    /// Whether `user` has read notification `id` (whose entry in their log is at `cursor`): a
    /// read mark for the id (`ack`, `POST /notifications/read` with `ids`), or the read cursor
    /// at or past the entry (`upTo`). Strongly consistent reads: a mark written just before
    /// the deadline counts.
    pub async fn is_read(&self, tenant: &str, user: &str, id: &str, cursor: Option<Cursor>) -> Result<bool, StoreError> {
        if self.table.get(Self::key(tenant, user), &format!("m#{id}")).await?.is_some() {
            return Ok(true);
        }
        let Some(cursor) = cursor else { return Ok(false) };
        let Some(item) = self.table.get(Self::key(tenant, user), "#cursor").await? else {
            return Ok(false);
        };
        let read: Cursor = get_s(&item, "cursor")?
            .parse()
            .map_err(|_| StoreError::Corrupt("read cursor".into()))?;
        Ok(read >= cursor)
    }

    /// The read cursor (`Cursor::MIN` when none was set).
    pub async fn read_cursor(&self, tenant: &str, user: &str) -> Result<Cursor, StoreError> {
        match self.table.get(Self::key(tenant, user), "#cursor").await? {
            None => Ok(Cursor::MIN),
            Some(item) => get_s(&item, "cursor")?
                .parse()
                .map_err(|_| StoreError::Corrupt("read cursor".into())),
        }
    }

    /// Which of `ids` are marked read: one read per id asked, however many marks the user has.
    pub async fn read_among(&self, tenant: &str, user: &str, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        self.read_among_with(tenant, user, ids, false).await
    }

    /// [`Self::read_among`], strongly consistent when `consistent`: a count sent to the user's
    /// devices after a read must see every mark written before it (see `services::inbox`).
    pub async fn read_among_with(&self, tenant: &str, user: &str, ids: &[&str], consistent: bool) -> Result<HashSet<String>, StoreError> {
        let keys: Vec<(String, String)> = ids.iter().map(|id| (Self::key(tenant, user), format!("m#{id}"))).collect();
        let mut read = HashSet::new();
        for item in self.table.batch_get_with(&keys, "sk", consistent).await? {
            if let Some(id) = get_s(&item, "sk")?.strip_prefix("m#") {
                read.insert(id.to_owned());
            }
        }
        Ok(read)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderState {
    Scheduled,
    Fired,
    Cancelled,
}

impl ReminderState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReminderState::Scheduled => "scheduled",
            ReminderState::Fired => "fired",
            ReminderState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(Self::Scheduled),
            "fired" => Some(Self::Fired),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub tenant: String,
    pub id: String,
    pub state: ReminderState,
    pub deliver_at: String,
    /// The producer message, as it will be handed to dispatch.
    pub request: String,
    /// Who created it through the HTTP API (absent for SQS producers).
    pub owner: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Reminders {
    table: Table,
}

impl Reminders {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    fn key(tenant: &str, id: &str) -> String {
        format!("m#{tenant}#{id}")
    }

    /// Records a scheduled reminder. Sending the same id again reschedules it; a cancelled id
    /// stays cancelled so a late redelivery cannot resurrect it. Returns false when cancelled.
    pub async fn schedule(&self, r: &Reminder, expires_at: i64) -> Result<bool, StoreError> {
        let mut put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::key(&r.tenant, &r.id)))
            .item("sk", s("#"))
            .item("state", s(ReminderState::Scheduled.as_str()))
            .item("deliverAt", s(r.deliver_at.clone()))
            .item("request", s(r.request.clone()))
            .item("expiresAt", n(expires_at))
            .condition_expression("attribute_not_exists(pk) OR #s <> :cancelled")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":cancelled", s(ReminderState::Cancelled.as_str()));
        if let Some(owner) = &r.owner {
            put = put.item("owner", s(owner.clone()));
        }
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("PutItem", e)),
        }
    }

    fn pending_key(tenant: &str, user: &str) -> String {
        format!("mu#{tenant}#{user}")
    }

    /// The ids (store keys) of `user`'s own reminders still to fire: one row each, living until
    /// its `deliverAt`, so a fired one stops counting by itself and only a cancel removes one.
    pub async fn pending_of(&self, tenant: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let now = super::epoch_seconds();
        let rows = self.table.query_partition(&Self::pending_key(tenant, user)).await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            if super::get_n(&row, "expiresAt")? > now {
                ids.push(get_s(&row, "sk")?.to_owned());
            }
        }
        Ok(ids)
    }

    /// Counts `id` among `user`'s pending reminders until `until` (epoch seconds, its deliverAt).
    pub async fn track_pending(&self, tenant: &str, user: &str, id: &str, until: i64) -> Result<(), StoreError> {
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::pending_key(tenant, user)))
            .item("sk", s(id))
            .item("expiresAt", n(until))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        Ok(())
    }

    /// `id` no longer counts (cancelled); absent is fine.
    pub async fn untrack_pending(&self, tenant: &str, user: &str, id: &str) -> Result<(), StoreError> {
        self.table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::pending_key(tenant, user)))
            .key("sk", s(id))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DeleteItem", e))?;
        Ok(())
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<Reminder>, StoreError> {
        let item = self.table.get(Self::key(tenant, id), "#").await?;
        let Some(item) = item else { return Ok(None) };
        Ok(Some(Reminder {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
            state: ReminderState::parse(get_s(&item, "state")?).ok_or_else(|| StoreError::Corrupt("reminder state".into()))?,
            deliver_at: item.get("deliverAt").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default(),
            request: item.get("request").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default(),
            owner: item.get("owner").and_then(|v| v.as_s().ok()).cloned(),
        }))
    }

    /// Cancels, even before the reminder is known: a cancel that overtakes its notification on
    /// the queue still wins. Returns the previous state, if any.
    pub async fn cancel(&self, tenant: &str, id: &str, expires_at: i64) -> Result<Option<ReminderState>, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::key(tenant, id)))
            .key("sk", s("#"))
            .update_expression("SET #s = :cancelled, expiresAt = if_not_exists(expiresAt, :exp)")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":cancelled", s(ReminderState::Cancelled.as_str()))
            .expression_attribute_values(":exp", n(expires_at))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        Ok(out
            .attributes
            .and_then(|a| a.get("state").and_then(|v| v.as_s().ok()).and_then(|s| ReminderState::parse(s))))
    }

    /// Scheduled (or unknown) → fired, once. Returns false if it had fired or was cancelled.
    /// An unknown id is recorded as fired, so a schedule created elsewhere still fires once.
    pub async fn mark_fired(&self, tenant: &str, id: &str, expires_at: i64) -> Result<bool, StoreError> {
        let res = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::key(tenant, id)))
            .key("sk", s("#"))
            .update_expression("SET #s = :fired, expiresAt = if_not_exists(expiresAt, :exp)")
            .condition_expression("attribute_not_exists(pk) OR #s = :scheduled")
            .expression_attribute_values(":exp", n(expires_at))
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":fired", s(ReminderState::Fired.as_str()))
            .expression_attribute_values(":scheduled", s(ReminderState::Scheduled.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }
}
