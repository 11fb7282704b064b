//! Web Push subscriptions in `NotificationsTable`: one item per (user, browser endpoint).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | push subscription | `w#{tenant}#{user}` | `{endpoint key}` (SHA-256 of the endpoint, base64url) |
//!
//! Attributes `endpoint`, `p256dh`, `auth`, `createdAt`, `expiresAt` (TTL; rows past it are
//! skipped on read because TTL deletion is lazy).

use super::{Item, StoreError, Table, epoch_seconds, get_n, get_s, n, s};
use crate::push::{Subscription, endpoint_key};

#[derive(Clone, Debug)]
pub struct PushSubscriptions {
    table: Table,
}

impl PushSubscriptions {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    fn key(tenant: &str, user: &str) -> String {
        format!("w#{tenant}#{user}")
    }

    /// Stores (or refreshes) a subscription until `expires_at` (epoch seconds).
    pub async fn put(&self, tenant: &str, user: &str, sub: &Subscription, expires_at: i64) -> Result<(), StoreError> {
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::key(tenant, user)))
            .item("sk", s(endpoint_key(&sub.endpoint)))
            .item("endpoint", s(&sub.endpoint))
            .item("p256dh", s(&sub.p256dh))
            .item("auth", s(&sub.auth))
            .item("createdAt", s(crate::notification::now_rfc3339()))
            .item("expiresAt", n(expires_at))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        Ok(())
    }

    /// Removes the subscription stored under `key` ([`endpoint_key`]); absent is fine.
    pub async fn delete(&self, tenant: &str, user: &str, key: &str) -> Result<(), StoreError> {
        self.table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::key(tenant, user)))
            .key("sk", s(key))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DeleteItem", e))?;
        Ok(())
    }

    /// The user's live subscriptions, with their keys.
    pub async fn list(&self, tenant: &str, user: &str) -> Result<Vec<(String, Subscription)>, StoreError> {
        let now = epoch_seconds();
        let items = self.table.query_partition(&Self::key(tenant, user)).await?;
        let mut subs = Vec::with_capacity(items.len());
        for item in items {
            if let Some(sub) = live(&item, now)? {
                subs.push(sub);
            }
        }
        Ok(subs)
    }

    /// One subscription by key, if it is still live.
    pub async fn get(&self, tenant: &str, user: &str, key: &str) -> Result<Option<Subscription>, StoreError> {
        match self.table.get(Self::key(tenant, user), key).await? {
            Some(item) => Ok(live(&item, epoch_seconds())?.map(|(_, sub)| sub)),
            None => Ok(None),
        }
    }
}

fn live(item: &Item, now: i64) -> Result<Option<(String, Subscription)>, StoreError> {
    if get_n(item, "expiresAt")? <= now {
        return Ok(None);
    }
    Ok(Some((
        get_s(item, "sk")?.to_owned(),
        Subscription {
            endpoint: get_s(item, "endpoint")?.to_owned(),
            p256dh: get_s(item, "p256dh")?.to_owned(),
            auth: get_s(item, "auth")?.to_owned(),
            expires_ms: None,
        },
    )))
}
