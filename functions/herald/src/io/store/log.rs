//! The notification log (`NotificationsTable`): `pk = n#{groupKey}`, `sk = {cursor}`.
//!
//! Every accepted notification is written here before any push, once per topic, so `resume` and
//! `missed` can replay it for the retention window (TTL on `expiresAt`).
//!
//! Wide topics (`tenant`, `all`) are read by every user of the tenant (of the platform) on every
//! `resume`, `missed` and unread count: in a reconnect storm one partition would take them all,
//! and a DynamoDB partition serves at most 3,000 read units a second. So their entries are
//! written to [`WIDE_REPLICAS`] partitions (`n#{groupKey}`, then `n#{groupKey}#r{k}`), and each
//! reader always reads the one its user hashes to: the reads spread over them, at the price of
//! that many writes for a tenant or platform broadcast, which are rare next to the reads. All
//! replicas are written before dispatch checks the write landed in time (see `horizon`), so every
//! replica is as complete as the one partition was, and a user who always reads the same replica
//! sees its entries in cursor order as before.
//!
//! Latest-value streams: for a notification with a `collapse` key, `k#{groupKey}` / `{key}`
//! holds the cursor of the topic's latest entry of that key. It only ever moves forward (a
//! conditional update), and whoever moves it removes the entry it pointed to; an entry that
//! arrives behind it is removed at once. So the log keeps one entry per (topic, key) — the
//! latest by cursor — and `resume`/`missed` replay only that one.
//!
//! An entry's content is `content` (JSON) or, when that saves write units, `contentZ` (deflated;
//! see `compact`).

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, StoreError, Table, compact, epoch_seconds, get_n, get_s, n, put_request, s};
use crate::domain::cursor::Cursor;
use crate::domain::groups::{Group, stable_hash};
use crate::domain::notification::{Content, LogEntry};

#[derive(Clone, Debug)]
pub struct Log {
    table: Table,
}

/// Partitions a wide topic's entries are written to (see the module documentation).
pub const WIDE_REPLICAS: u16 = 8;

fn is_wide(topic: &Group) -> bool {
    matches!(topic, Group::Tenant | Group::All)
}

/// The partition of replica `replica` of a topic's log. Replica 0 is the topic's only partition
/// when it is not wide (and its first one when it is).
fn topic_pk(tenant: &str, topic: &Group, replica: u16) -> String {
    match replica {
        0 => format!("n#{}", topic.key(tenant)),
        r => format!("n#{}#r{r}", topic.key(tenant)),
    }
}

/// The partition `reader` (a user) reads a topic from: always the same one for a user.
fn read_pk(tenant: &str, topic: &Group, reader: &str) -> String {
    let replica = if is_wide(topic) {
        (stable_hash(reader) % u64::from(WIDE_REPLICAS)) as u16
    } else {
        0
    };
    topic_pk(tenant, topic, replica)
}

fn collapse_pk(tenant: &str, topic: &Group) -> String {
    format!("k#{}", topic.key(tenant))
}

/// What recording an entry as its key's latest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collapsed {
    /// It is the latest; the entry it replaced (if any) was removed from the log.
    Latest,
    /// A later entry of the key was there first: this one was removed, and is not to be pushed.
    Superseded,
}

/// A page of one topic's log.
#[derive(Debug, Default)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    pub more: bool,
    /// The sort key of the last item read, expired or not: how far this page got. An expired
    /// entry is skipped, but the reader has still moved past it.
    pub last_read: Option<Cursor>,
}

impl Log {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    /// Writes entries (one per topic) of a notification. Re-writing the same entry is harmless:
    /// the key is the topic and the cursor, which are fixed once the notification is claimed.
    pub async fn append(&self, tenant: &str, entries: &[(Group, LogEntry)], expires_at: i64) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(entries.len());
        for (topic, e) in entries {
            let json = serde_json::to_string(&e.content).map_err(|x| StoreError::Corrupt(x.to_string()))?;
            let replicas = if is_wide(topic) { WIDE_REPLICAS } else { 1 };
            for replica in 0..replicas {
                let mut item = Item::from([
                    ("pk".into(), s(topic_pk(tenant, topic, replica))),
                    ("sk".into(), s(e.cursor.to_string())),
                    ("id".into(), s(e.id.clone())),
                    ("topic".into(), s(e.topic.clone())),
                    ("createdAt".into(), s(e.created_at.clone())),
                    ("expiresAt".into(), n(expires_at)),
                ]);
                let (name, value) = compact::content_attribute(json.clone(), &item);
                item.insert(name.into(), value);
                item.shrink_to_fit();
                writes.push(put_request(item)?);
            }
        }
        self.table.batch_write(writes).await
    }

    /// Makes `cursor` the latest entry of `key` in `topic`, removing the entry it supersedes (or
    /// itself, when a later one was recorded first).
    pub async fn collapse(&self, tenant: &str, topic: &Group, key: &str, cursor: Cursor, expires_at: i64) -> Result<Collapsed, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(collapse_pk(tenant, topic)))
            .key("sk", s(key))
            .update_expression("SET #c = :c, expiresAt = :e")
            .condition_expression("attribute_not_exists(#c) OR #c < :c")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":c", s(cursor.to_string()))
            .expression_attribute_values(":e", n(expires_at))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let (outcome, remove) = match out {
            Ok(o) => (
                Collapsed::Latest,
                o.attributes.as_ref().and_then(|a| get_s(a, "cursor").ok()).map(str::to_owned),
            ),
            Err(e) => match e.into_service_error() {
                // Equal is a redelivery of the same entry: it stays.
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    let stored = failed.item.as_ref().and_then(|a| get_s(a, "cursor").ok()).map(str::to_owned);
                    if stored.as_deref() == Some(cursor.to_string().as_str()) {
                        return Ok(Collapsed::Latest);
                    }
                    (Collapsed::Superseded, Some(cursor.to_string()))
                }
                other => return Err(StoreError::dynamo_service("UpdateItem", other)),
            },
        };
        if let Some(sk) = remove {
            // From every replica of a wide topic: each reader must see only the latest.
            let replicas = if is_wide(topic) { WIDE_REPLICAS } else { 1 };
            for replica in 0..replicas {
                self.table
                    .client
                    .delete_item()
                    .table_name(&self.table.name)
                    .key("pk", s(topic_pk(tenant, topic, replica)))
                    .key("sk", s(sk.clone()))
                    .send()
                    .await
                    .map_err(|e| StoreError::dynamo("DeleteItem", e))?;
            }
        }
        Ok(outcome)
    }

    /// Removes a notification's entries at `cursor` under `topics` (every replica of a wide
    /// one): what an update or a recall replaces (`services::inbox`).
    pub async fn remove(&self, tenant: &str, topics: &[Group], cursor: Cursor) -> Result<(), StoreError> {
        let mut deletes = Vec::new();
        for topic in topics {
            let replicas = if is_wide(topic) { WIDE_REPLICAS } else { 1 };
            for replica in 0..replicas {
                deletes.push(super::delete_request(topic_pk(tenant, topic, replica), cursor.to_string())?);
            }
        }
        self.table.batch_write(deletes).await
    }

    /// The entry of `topic` at `cursor`, if it is there (read consistently).
    pub async fn entry(&self, tenant: &str, topic: &Group, cursor: Cursor) -> Result<Option<LogEntry>, StoreError> {
        match self.table.get(topic_pk(tenant, topic, 0), &cursor.to_string()).await? {
            Some(item) => Ok(Some(parse_entry(&item)?)),
            None => Ok(None),
        }
    }

    /// The cursor of the latest entry of `key` in `topic`, if any.
    pub async fn latest(&self, tenant: &str, topic: &Group, key: &str) -> Result<Option<Cursor>, StoreError> {
        let item = self.table.get(collapse_pk(tenant, topic), key).await?;
        Ok(item
            .as_ref()
            .and_then(|i| get_s(i, "cursor").ok())
            .and_then(|c| c.parse::<Cursor>().ok()))
    }

    /// Entries of a topic strictly after `after`, oldest first, as `reader` (a user) reads them.
    pub async fn after(&self, tenant: &str, topic: &Group, reader: &str, after: Cursor, limit: usize) -> Result<LogPage, StoreError> {
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .key_condition_expression("pk = :pk AND sk > :after")
            .expression_attribute_values(":pk", s(read_pk(tenant, topic, reader)))
            .expression_attribute_values(":after", s(after.to_string()))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query", e))?;
        let now = epoch_seconds();
        let items = out.items.unwrap_or_default();
        let last_read = items
            .last()
            .and_then(|i| get_s(i, "sk").ok())
            .and_then(|sk| sk.parse::<Cursor>().ok());
        let mut entries = Vec::new();
        for item in items {
            if get_n(&item, "expiresAt").is_ok_and(|e| e < now) {
                continue;
            }
            entries.push(parse_entry(&item)?);
        }
        Ok(LogPage {
            entries,
            more: out.last_evaluated_key.is_some(),
            last_read,
        })
    }

    /// Entries of a topic strictly before `before` (`None`: from the newest), newest first, not
    /// older than `floor`, as `reader` (a user) reads them: room history. At most `limit` items
    /// are read; `last_read` is the oldest of them, expired or not, where the next page ends.
    pub async fn before(
        &self,
        tenant: &str,
        topic: &Group,
        reader: &str,
        before: Option<Cursor>,
        floor: Cursor,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        let limit = limit.clamp(1, 1000);
        let mut query = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .expression_attribute_values(":pk", s(read_pk(tenant, topic, reader)))
            .scan_index_forward(false)
            // One more than asked: whether another page exists is then known, not guessed.
            .limit(limit as i32 + 1);
        query = match before {
            Some(b) => query
                .key_condition_expression("pk = :pk AND sk < :before")
                .expression_attribute_values(":before", s(b.to_string())),
            None => query.key_condition_expression("pk = :pk"),
        };
        let out = query.send().await.map_err(|e| StoreError::dynamo("Query", e))?;
        let now = epoch_seconds();
        let mut items = out.items.unwrap_or_default();
        let mut more = items.len() > limit || out.last_evaluated_key.is_some();
        items.truncate(limit);
        let mut entries = Vec::new();
        let mut last_read = None;
        for item in items {
            let cursor = get_s(&item, "sk")?
                .parse::<Cursor>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Past the retention window: never replayed, so never in history either.
            if cursor < floor {
                more = false;
                break;
            }
            last_read = Some(cursor);
            if get_n(&item, "expiresAt").is_ok_and(|e| e < now) {
                continue;
            }
            entries.push(parse_entry(&item)?);
        }
        Ok(LogPage { entries, more, last_read })
    }
}

fn parse_entry(item: &Item) -> Result<LogEntry, StoreError> {
    let cursor = get_s(item, "sk")?
        .parse::<Cursor>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let content: Content = serde_json::from_str(&compact::content_json(item)?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(LogEntry {
        id: get_s(item, "id")?.to_owned(),
        cursor,
        topic: get_s(item, "topic")?.to_owned(),
        content,
        created_at: get_s(item, "createdAt")?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 10 of the nothing-lost issue: every user read the one partition of `tenant` and
    /// `all`. Users now spread over the replicas; personal and named groups stay in one.
    #[test]
    fn readers_of_wide_topics_spread_over_the_replicas() {
        let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
        for topic in [Group::Tenant, Group::All] {
            let mut load = std::collections::HashMap::new();
            for u in &users {
                *load.entry(read_pk("acme", &topic, u)).or_insert(0usize) += 1;
            }
            assert_eq!(load.len(), usize::from(WIDE_REPLICAS), "{topic}: {load:?}");
            let hottest = load.values().copied().max().unwrap_or_default();
            assert!(
                hottest < users.len() / 4,
                "{topic}: one partition takes {hottest} of {} readers",
                users.len()
            );
            for u in &users {
                assert_eq!(
                    read_pk("acme", &topic, u),
                    read_pk("acme", &topic, u),
                    "a user always reads the same replica"
                );
            }
        }
        let course = Group::Named {
            kind: "course".into(),
            id: "42".into(),
        };
        assert_eq!(read_pk("acme", &course, "user-1"), topic_pk("acme", &course, 0));
        assert_eq!(read_pk("acme", &course, "user-1"), read_pk("acme", &course, "user-2"));
    }
}
