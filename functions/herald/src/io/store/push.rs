//! Web Push subscriptions in `NotificationsTable`: one item per (user, browser endpoint).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | push subscription | `w#{tenant}#{user}` | `{endpoint key}` (SHA-256 of the endpoint, base64url) |
//! | endpoint owner | `wo#{endpoint key}` | `#` |
//!
//! Attributes `endpoint`, `p256dh`, `auth`, `createdAt`, `expiresAt` (TTL; rows past it are
//! skipped on read because TTL deletion is lazy). The owner item (`tenant`, `user`, `expiresAt`)
//! names the one user an endpoint belongs to: a browser is one device, and a shared one
//! (another user signs in) must stop receiving the previous user's notifications.

use super::{Item, StoreError, Table, epoch_seconds, get_n, get_s, n, s};
use crate::io::push::{Subscription, endpoint_key};

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

    fn owner_key(key: &str) -> String {
        format!("wo#{key}")
    }

    /// The (tenant, user) the endpoint stored under `key` belongs to, if any.
    async fn owner(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        match self.table.get(Self::owner_key(key), "#").await? {
            Some(item) => Ok(Some((get_s(&item, "tenant")?.to_owned(), get_s(&item, "user")?.to_owned()))),
            None => Ok(None),
        }
    }

    /// Stores (or refreshes) a subscription until `expires_at` (epoch seconds), taking the
    /// endpoint over from any other user who had it: an endpoint is stored under one user only.
    ///
    /// Without a transaction: the owner item is written first and read again after the row, so
    /// of two users storing one endpoint at once, the one whose owner write landed last keeps it
    /// and the other removes its own row (reads are consistent).
    pub async fn put(&self, tenant: &str, user: &str, sub: &Subscription, expires_at: i64) -> Result<(), StoreError> {
        let key = endpoint_key(&sub.endpoint);
        let me = (tenant.to_owned(), user.to_owned());
        if let Some(previous) = self.owner(&key).await?
            && previous != me
        {
            self.delete(&previous.0, &previous.1, &key).await?;
        }
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::owner_key(&key)))
            .item("sk", s("#"))
            .item("tenant", s(tenant))
            .item("user", s(user))
            .item("expiresAt", n(expires_at))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", e))?;
        self.put_row(tenant, user, sub, expires_at).await?;
        if self.owner(&key).await?.is_some_and(|owner| owner != me) {
            self.delete(tenant, user, &key).await?;
        }
        Ok(())
    }

    /// Forgets the caller's subscription to `endpoint`, and the endpoint's owner item when it is
    /// the caller's.
    pub async fn remove(&self, tenant: &str, user: &str, endpoint: &str) -> Result<(), StoreError> {
        let key = endpoint_key(endpoint);
        self.delete(tenant, user, &key).await?;
        let result = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", s(Self::owner_key(&key)))
            .key("sk", s("#"))
            .condition_expression("#t = :t AND #u = :u")
            .expression_attribute_names("#t", "tenant")
            .expression_attribute_names("#u", "user")
            .expression_attribute_values(":t", s(tenant))
            .expression_attribute_values(":u", s(user))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Another user's (or nobody's): theirs stays.
            Err(e) if super::conditional_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::dynamo("DeleteItem", e)),
        }
    }

    async fn put_row(&self, tenant: &str, user: &str, sub: &Subscription, expires_at: i64) -> Result<(), StoreError> {
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(Self::key(tenant, user)))
            .item("sk", s(endpoint_key(&sub.endpoint)))
            .item("endpoint", s(&sub.endpoint))
            .item("p256dh", s(&sub.p256dh))
            .item("auth", s(&sub.auth))
            .item("createdAt", s(crate::domain::notification::now_rfc3339()))
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
