//! Chat state in `NotificationsTable` (docs/data-model.md): read receipts per (group, user) and
//! the records of shared files.
//!
//! A receipt is one item, `rr#{groupKey}` / `{user}`: `upTo` (the member's last-read cursor,
//! only ever moved forward by a conditional write), and what coalescing needs — `sent` (the
//! `upTo` last pushed to the other members), `sentAt` (when, epoch ms) and `pending` (a flush is
//! queued). One partition per group, so `GET /groups/{group}/receipts` is one Query.
//!
//! A shared file's record is `f#{key}` / `#`: the group it was shared in, who uploaded it, its
//! name, type and size. The key is what a chat message carries; the record is what a download is
//! authorized on.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, StoreError, Table, conditional_failed, get_n, get_s, n, s};
use crate::domain::cursor::Cursor;

#[derive(Clone, Debug)]
pub struct Receipts {
    table: Table,
}

/// One member's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub user: String,
    pub up_to: Cursor,
}

/// A page of a group's receipts.
#[derive(Debug, Clone, Default)]
pub struct ReceiptsPage {
    pub receipts: Vec<Receipt>,
    /// More rows exist than were read.
    pub more: bool,
}

fn pk(group_key: &str) -> String {
    format!("rr#{group_key}")
}

impl Receipts {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    /// Moves `user`'s last-read cursor in the group to `up_to` if that is forward. Answers the
    /// cursor stored afterwards and whether this call moved it.
    pub async fn advance(&self, group_key: &str, user: &str, up_to: Cursor, expires_at: i64) -> Result<(Cursor, bool), StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .update_expression("SET upTo = :c, expiresAt = :e")
            // Never backwards: a late or replayed `read` cannot undo a newer one.
            .condition_expression("attribute_not_exists(upTo) OR upTo < :c")
            .expression_attribute_values(":c", s(up_to.to_string()))
            .expression_attribute_values(":e", n(expires_at))
            // A refused write answers the item that refused it: no second read, and no window
            // in which a newer `read` lands between the two.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(_) => Ok((up_to, true)),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    let stored = failed
                        .item
                        .as_ref()
                        .and_then(|i| get_s(i, "upTo").ok())
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(up_to);
                    Ok((stored, false))
                }
                other => Err(StoreError::dynamo_service("UpdateItem", other)),
            },
        }
    }

    /// Claims the right to push `up_to` now: nothing was pushed for this member in the last
    /// `window_ms`, and nothing at or past `up_to` was pushed. One conditional write, so of two
    /// instances at most one pushes.
    pub async fn open_gate(&self, group_key: &str, user: &str, up_to: Cursor, now_ms: u64, window_ms: u64) -> Result<bool, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .update_expression("SET sent = :c, sentAt = :now")
            .condition_expression(
                "attribute_exists(upTo) AND (attribute_not_exists(sentAt) OR sentAt <= :since) AND (attribute_not_exists(sent) OR sent < :c)",
            )
            .expression_attribute_values(":c", s(up_to.to_string()))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":since", n(now_ms.saturating_sub(window_ms)))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// Marks a flush as queued; `false` when one already is (then that one pushes the latest).
    pub async fn set_pending(&self, group_key: &str, user: &str, now_ms: u64) -> Result<bool, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .update_expression("SET pending = :now")
            .condition_expression("attribute_exists(upTo) AND attribute_not_exists(pending)")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// A queued flush runs: clears `pending` and, when the stored `upTo` was not pushed yet,
    /// claims it (`sent`), answering the cursor to push.
    pub async fn take_pending(&self, group_key: &str, user: &str, now_ms: u64) -> Result<Option<Cursor>, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .update_expression("REMOVE pending")
            .condition_expression("attribute_exists(upTo)")
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let item = match out {
            Ok(o) => o.attributes.unwrap_or_default(),
            Err(e) if conditional_failed(&e) => return Ok(None),
            Err(e) => return Err(StoreError::dynamo("UpdateItem", e)),
        };
        let Some(up_to) = get_s(&item, "upTo").ok().and_then(|c| c.parse::<Cursor>().ok()) else {
            return Ok(None);
        };
        let sent = get_s(&item, "sent").ok().and_then(|c| c.parse::<Cursor>().ok());
        if sent.is_some_and(|s| s >= up_to) {
            return Ok(None);
        }
        // Claimed like the gate, without the window: this is the window's trailing push.
        let claimed = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .update_expression("SET sent = :c, sentAt = :now")
            .condition_expression("attribute_not_exists(sent) OR sent < :c")
            .expression_attribute_values(":c", s(up_to.to_string()))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match claimed {
            Ok(_) => Ok(Some(up_to)),
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// Up to `limit` receipts of a group, read consistently, skipping expired ones.
    pub async fn list(&self, group_key: &str, limit: usize) -> Result<ReceiptsPage, StoreError> {
        let mut receipts = Vec::new();
        let mut start: Option<Item> = None;
        let now = super::epoch_seconds();
        loop {
            let out = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk(group_key)))
                .projection_expression("sk, upTo, expiresAt")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .limit((limit + 1 - receipts.len()).clamp(1, 1000) as i32)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            for item in out.items.unwrap_or_default() {
                if get_n(&item, "expiresAt").is_ok_and(|e| e < now) {
                    continue;
                }
                let (Ok(user), Some(up_to)) = (get_s(&item, "sk"), get_s(&item, "upTo").ok().and_then(|c| c.parse().ok())) else {
                    continue;
                };
                receipts.push(Receipt {
                    user: user.to_owned(),
                    up_to,
                });
            }
            if receipts.len() > limit {
                receipts.truncate(limit);
                return Ok(ReceiptsPage { receipts, more: true });
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(ReceiptsPage { receipts, more: false });
            }
        }
    }
}

/// Records of shared files.
#[derive(Clone, Debug)]
pub struct Files {
    table: Table,
}

/// What was recorded when a file's upload URL was handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub key: String,
    pub tenant: String,
    /// The group it was shared in (its name, `room:7`): who may download it.
    pub group: String,
    pub user: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

impl Files {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    pub async fn put(&self, f: &FileRecord, expires_at: i64) -> Result<(), StoreError> {
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(format!("f#{}", f.key)))
            .item("sk", s("#"))
            .item("tenant", s(f.tenant.clone()))
            .item("group", s(f.group.clone()))
            .item("user", s(f.user.clone()))
            .item("name", s(f.name.clone()))
            .item("contentType", s(f.content_type.clone()))
            .item("size", n(f.size))
            .item("expiresAt", n(expires_at))
            // A key is fresh (a new ULID): an existing record means a bug, never overwrite it.
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<FileRecord>, StoreError> {
        let Some(item) = self.table.get(format!("f#{key}"), "#").await? else {
            return Ok(None);
        };
        if get_n(&item, "expiresAt").is_ok_and(|e| e < super::epoch_seconds()) {
            return Ok(None);
        }
        Ok(Some(FileRecord {
            key: key.to_owned(),
            tenant: get_s(&item, "tenant")?.to_owned(),
            group: get_s(&item, "group")?.to_owned(),
            user: get_s(&item, "user")?.to_owned(),
            name: get_s(&item, "name")?.to_owned(),
            content_type: get_s(&item, "contentType")?.to_owned(),
            size: get_n(&item, "size")?.max(0) as u64,
        }))
    }
}
