//! The notification log (`NotificationsTable`): `pk = n#{groupKey}`, `sk = {cursor}`.
//!
//! Every accepted notification is written here before any push, once per topic, so `resume` and
//! `missed` can replay it for the retention window (TTL on `expiresAt`).

use super::{Item, StoreError, Table, epoch_seconds, get_n, get_s, n, put_request, s};
use crate::cursor::Cursor;
use crate::groups::Group;
use crate::notification::{Content, LogEntry};

#[derive(Clone, Debug)]
pub struct Log {
    table: Table,
}

fn topic_pk(tenant: &str, topic: &Group) -> String {
    format!("n#{}", topic.key(tenant))
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
            let mut item = Item::from([
                ("pk".into(), s(topic_pk(tenant, topic))),
                ("sk".into(), s(e.cursor.to_string())),
                ("id".into(), s(e.id.clone())),
                ("topic".into(), s(e.topic.clone())),
                (
                    "content".into(),
                    s(serde_json::to_string(&e.content).map_err(|x| StoreError::Corrupt(x.to_string()))?),
                ),
                ("createdAt".into(), s(e.created_at.clone())),
                ("expiresAt".into(), n(expires_at)),
            ]);
            item.shrink_to_fit();
            writes.push(put_request(item)?);
        }
        self.table.batch_write(writes).await
    }

    /// Entries of a topic strictly after `after`, oldest first.
    pub async fn after(&self, tenant: &str, topic: &Group, after: Cursor, limit: usize) -> Result<LogPage, StoreError> {
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .key_condition_expression("pk = :pk AND sk > :after")
            .expression_attribute_values(":pk", s(topic_pk(tenant, topic)))
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
}

fn parse_entry(item: &Item) -> Result<LogEntry, StoreError> {
    let cursor = get_s(item, "sk")?
        .parse::<Cursor>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let content: Content = serde_json::from_str(get_s(item, "content")?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(LogEntry {
        id: get_s(item, "id")?.to_owned(),
        cursor,
        topic: get_s(item, "topic")?.to_owned(),
        content,
        created_at: get_s(item, "createdAt")?.to_owned(),
    })
}
