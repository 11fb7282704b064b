//! DynamoDB data layer. Every access pattern is a key lookup or a Query; nothing Scans.
//!
//! Two tables, both `pk`/`sk` strings with TTL on `expiresAt` (see `docs/data-model.md`):
//! - `ConnectionsTable`: ephemeral connection state — connections, group memberships and rate
//!   budgets.
//! - `NotificationsTable`: the log and per-user state — log entries, idempotency keys, read
//!   marks, durable subscriptions, Web Push subscriptions, reminders, chat receipts and the
//!   records of shared files.

mod budgets;
mod chat;
mod compact;
mod connections;
mod inbox;
mod log;
mod presence;
mod push;
mod state;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};

pub use budgets::Budgets;
pub use chat::{FileRecord, Files, Receipt, Receipts, ReceiptsPage};
pub use connections::{CONNECT_GRACE_MS, Closed, ConnectionRecord, Connections, Gone, Joined, Member, MemberRow, MembersPage, Membership};
pub use inbox::{Inbox, NotRevised, Revisable};
pub use log::{Collapsed, Log, LogPage, WIDE_REPLICAS};
pub use presence::{Departure, Presences};
pub use push::PushSubscriptions;
pub use state::{Claim, Idempotency, Posted, ReadState, Reminder, ReminderState, Reminders, Subscriptions};

use crate::domain::config::Tables;

pub type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {op} failed: {message}")]
    Dynamo {
        op: &'static str,
        code: Option<String>,
        message: String,
    },
    #[error("DynamoDB {op} left {count} items unprocessed after retries")]
    Unprocessed { op: &'static str, count: usize },
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn dynamo<E>(op: &'static str, err: aws_sdk_dynamodb::error::SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        StoreError::Dynamo {
            op,
            code: err.code().map(str::to_owned),
            message: DisplayErrorContext(&err).to_string(),
        }
    }

    /// [`Self::dynamo`] for an error already taken out of its `SdkError` (to match on it).
    pub(crate) fn dynamo_service<E>(op: &'static str, err: E) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        StoreError::Dynamo {
            op,
            code: err.code().map(str::to_owned),
            message: DisplayErrorContext(&err).to_string(),
        }
    }

    /// Throttling and capacity errors: worth redelivering the message that hit them.
    pub fn is_throttling(&self) -> bool {
        matches!(self, StoreError::Dynamo { code: Some(c), .. } if c.contains("Throttl") || c == "ProvisionedThroughputExceededException" || c == "RequestLimitExceeded")
    }
}

/// Every store over one shared client, built once at init.
#[derive(Clone, Debug)]
pub struct Store {
    pub connections: Connections,
    pub budgets: Budgets,
    pub presence: Presences,
    pub log: Log,
    pub idempotency: Idempotency,
    pub subscriptions: Subscriptions,
    pub push_subscriptions: PushSubscriptions,
    pub read_state: ReadState,
    pub reminders: Reminders,
    pub receipts: Receipts,
    pub files: Files,
    pub inbox: Inbox,
}

impl Store {
    /// The store every function builds at init, from `HERALD_*_TABLE`.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, crate::domain::config::ConfigError> {
        Ok(Self::new(Client::new(sdk), &Tables::from_source(&crate::domain::config::Env)?))
    }

    pub fn new(client: Client, tables: &Tables) -> Self {
        let n = || Table {
            client: client.clone(),
            name: tables.notifications.clone(),
        };
        Self {
            connections: Connections::new(Table {
                client: client.clone(),
                name: tables.connections.clone(),
            }),
            budgets: Budgets::new(Table {
                client: client.clone(),
                name: tables.connections.clone(),
            }),
            presence: Presences::new(Table {
                client: client.clone(),
                name: tables.connections.clone(),
            }),
            log: Log::new(n()),
            idempotency: Idempotency::new(n()),
            subscriptions: Subscriptions::new(n()),
            push_subscriptions: PushSubscriptions::new(n()),
            read_state: ReadState::new(n()),
            reminders: Reminders::new(n()),
            receipts: Receipts::new(n()),
            files: Files::new(n()),
            inbox: Inbox::new(n()),
        }
    }
}

/// A client and a table name.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub client: Client,
    pub name: String,
}

/// DynamoDB's BatchWriteItem limit.
const BATCH_LIMIT: usize = 25;
const BATCH_ATTEMPTS: u32 = 8;

impl Table {
    /// Writes in chunks of 25, each retried until nothing is left unprocessed ([`until_processed`]).
    pub async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut pending: Vec<WriteRequest> = requests;
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(BATCH_LIMIT));
            let chunk = std::mem::replace(&mut pending, rest);
            until_processed("BatchWriteItem", chunk, |chunk| async move {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(self.name.clone(), chunk)
                    .send()
                    .await
                    .map_err(|e| StoreError::dynamo("BatchWriteItem", e))?;
                let left = out.unprocessed_items.and_then(|mut m| m.remove(&self.name)).unwrap_or_default();
                Ok((left, Vec::new()))
            })
            .await?;
        }
        Ok(())
    }
}

/// Sends `pending` with `send` until nothing is left unprocessed, with exponential backoff, as
/// the DynamoDB docs require of batch calls: one that "succeeds" may still have left part of it
/// undone. `send` answers what was left and the items it read; still left after
/// `BATCH_ATTEMPTS` is an error.
async fn until_processed<T, F, Fut>(op: &'static str, mut pending: Vec<T>, mut send: F) -> Result<Vec<Item>, StoreError>
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Vec<Item>), StoreError>>,
{
    let mut read = Vec::new();
    let mut attempt = 0;
    while !pending.is_empty() {
        if attempt >= BATCH_ATTEMPTS {
            return Err(StoreError::Unprocessed { op, count: pending.len() });
        }
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        attempt += 1;
        let (left, items) = send(pending).await?;
        read.extend(items);
        pending = left;
    }
    Ok(read)
}

impl Table {
    /// One item by key, read consistently: every caller decides on what it just read.
    pub async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        Ok(out.item)
    }

    /// The items of `keys` (pk, sk) that exist, eventually consistent, `projection` only, in
    /// batches of 100. Keys left unprocessed (throttling) are left out: callers use this only
    /// where a missing item errs on the safe side (sent again, counted unread).
    pub async fn batch_get(&self, keys: &[(String, String)], projection: &str) -> Result<Vec<Item>, StoreError> {
        self.batch_get_with(keys, projection, false).await
    }

    /// [`Self::batch_get`], strongly consistent when `consistent`.
    pub async fn batch_get_with(&self, keys: &[(String, String)], projection: &str, consistent: bool) -> Result<Vec<Item>, StoreError> {
        self.batch_get_items(keys, projection, consistent, false).await
    }

    /// The items of `keys` that exist, every key answered: keys left unprocessed are asked
    /// again with backoff, as for writes, and still unprocessed after that is an error. For
    /// callers to whom a missing item would be a wrong answer (a user's preferences).
    pub async fn batch_get_all(&self, keys: &[(String, String)], projection: &str) -> Result<Vec<Item>, StoreError> {
        self.batch_get_items(keys, projection, false, true).await
    }

    async fn batch_get_items(
        &self,
        keys: &[(String, String)],
        projection: &str,
        consistent: bool,
        every_key: bool,
    ) -> Result<Vec<Item>, StoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let unique: std::collections::BTreeSet<&(String, String)> = keys.iter().collect();
        let unique: Vec<&(String, String)> = unique.into_iter().collect();
        let mut items = Vec::new();
        for chunk in unique.chunks(100) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|(pk, sk)| Item::from([("pk".to_owned(), s(pk.clone())), ("sk".to_owned(), s(sk.clone()))]))
                .collect();
            let read = until_processed("BatchGetItem", keys, |keys| async move {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression(projection)
                    .consistent_read(consistent)
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.name, request)
                    .send()
                    .await
                    .map_err(|e| StoreError::dynamo("BatchGetItem", e))?;
                let items = answer.responses.unwrap_or_default().remove(&self.name).unwrap_or_default();
                let left = match answer.unprocessed_keys.and_then(|mut u| u.remove(&self.name)) {
                    Some(left) if every_key => left.keys,
                    _ => Vec::new(),
                };
                Ok((left, items))
            })
            .await?;
            items.extend(read);
        }
        Ok(items)
    }

    /// Every item of one partition, following pagination.
    pub async fn query_partition(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.name)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

/// A batch-write entry that puts `item`.
pub(crate) fn put_request(item: Item) -> Result<WriteRequest, StoreError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// A batch-write entry that deletes the item `pk`/`sk`.
pub(crate) fn delete_request(pk: String, sk: String) -> Result<WriteRequest, StoreError> {
    let del = DeleteRequest::builder()
        .key("pk", s(pk))
        .key("sk", s(sk))
        .build()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(WriteRequest::builder().delete_request(del).build())
}

/// A conditional write whose condition did not hold: an expected outcome, not a failure.
pub(crate) fn conditional_failed<E: ProvideErrorMetadata>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn backoff(attempt: u32) -> Duration {
    let base = 25u64 << attempt.min(6);
    Duration::from_millis(base + jitter(base))
}

/// A random number below `bound` (for backoff jitter).
pub fn jitter(bound: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    if bound == 0 { 0 } else { u64::from_le_bytes(b) % bound }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, key: &str) -> Result<&'a str, StoreError> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("missing string {key}")))
}

pub(crate) fn get_n(item: &Item, key: &str) -> Result<i64, StoreError> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("missing number {key}")))
}

pub(crate) fn get_list(item: &Item, key: &str) -> Vec<String> {
    match item.get(key) {
        Some(AttributeValue::L(values)) => values.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.clone())).collect())
}

/// Seconds since the epoch, for TTL attributes.
pub fn epoch_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}
