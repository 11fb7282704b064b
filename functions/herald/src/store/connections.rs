//! Connections and group memberships (`ConnectionsTable`).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | connection | `c#{connectionId}` | `#meta` |
//! | membership, reverse (cleanup) | `c#{connectionId}` | `g#{groupKey}` |
//! | membership, forward (fan-out) | `g#{groupKey}#{shard}` | `{connectionId}` |
//!
//! One Query on `c#{id}` returns a connection with all its memberships, so closing it is a Query
//! and a batch delete. A group's live connections are a paginated Query per shard; big groups are
//! spread over several shard partitions so no single partition key runs hot.

use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};

use super::{Item, StoreError, Table, epoch_seconds, get_list, get_n, get_s, list, n, s};
use crate::groups::{Group, stable_hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub id: String,
    pub user: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// The token's `groups` claim: entitlements checked again on `join`/`resume`.
    pub groups: Vec<String>,
    pub connected_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub connection_id: String,
    pub user: String,
}

#[derive(Debug, Clone, Default)]
pub struct MembersPage {
    pub members: Vec<Member>,
    /// Where the next page starts (the last connection id seen), if there is one.
    pub next: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Connections {
    table: Table,
}

fn conn_pk(id: &str) -> String {
    format!("c#{id}")
}

/// The partition key of one shard of a group's membership list.
pub fn shard_pk(group_key: &str, shard: u16) -> String {
    format!("g#{group_key}#{shard}")
}

fn shard_of(connection_id: &str, shards: u16) -> u16 {
    (stable_hash(connection_id) % u64::from(shards.max(1))) as u16
}

fn put(item: Item) -> Result<WriteRequest, StoreError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn delete(pk: String, sk: String) -> Result<WriteRequest, StoreError> {
    let del = DeleteRequest::builder()
        .key("pk", s(pk))
        .key("sk", s(sk))
        .build()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(WriteRequest::builder().delete_request(del).build())
}

impl Connections {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    fn membership_items(&self, conn: &ConnectionRecord, group: &Group, shards: u16, expires: i64) -> Result<[WriteRequest; 2], StoreError> {
        let key = group.key(&conn.tenant);
        let shard = shard_of(&conn.id, group.shards(shards));
        let forward = Item::from([
            ("pk".into(), s(shard_pk(&key, shard))),
            ("sk".into(), s(conn.id.clone())),
            ("user".into(), s(conn.user.clone())),
            ("expiresAt".into(), n(expires)),
        ]);
        let reverse = Item::from([
            ("pk".into(), s(conn_pk(&conn.id))),
            ("sk".into(), s(format!("g#{key}"))),
            ("group".into(), s(group.to_string())),
            ("shard".into(), n(shard)),
            ("expiresAt".into(), n(expires)),
        ]);
        Ok([put(forward)?, put(reverse)?])
    }

    /// Stores a new connection and its initial memberships.
    pub async fn open(&self, conn: &ConnectionRecord, groups: &[Group], shards: u16, ttl_seconds: u64) -> Result<(), StoreError> {
        let expires = epoch_seconds() + ttl_seconds as i64;
        let mut writes = vec![put(Item::from([
            ("pk".into(), s(conn_pk(&conn.id))),
            ("sk".into(), s("#meta")),
            ("user".into(), s(conn.user.clone())),
            ("tenant".into(), s(conn.tenant.clone())),
            ("roles".into(), list(&conn.roles)),
            ("groups".into(), list(&conn.groups)),
            ("connectedAt".into(), n(conn.connected_at)),
            ("expiresAt".into(), n(expires)),
        ]))?];
        for g in groups {
            writes.extend(self.membership_items(conn, g, shards, expires)?);
        }
        self.table.batch_write(writes).await
    }

    pub async fn get(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .key("pk", s(conn_pk(id)))
            .key("sk", s("#meta"))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        let Some(item) = out.item else { return Ok(None) };
        Ok(Some(ConnectionRecord {
            id: id.to_owned(),
            user: get_s(&item, "user")?.to_owned(),
            tenant: get_s(&item, "tenant")?.to_owned(),
            roles: get_list(&item, "roles"),
            groups: get_list(&item, "groups"),
            connected_at: get_n(&item, "connectedAt")?,
        }))
    }

    pub async fn join(&self, conn: &ConnectionRecord, group: &Group, shards: u16, ttl_seconds: u64) -> Result<(), StoreError> {
        let expires = epoch_seconds() + ttl_seconds as i64;
        self.table
            .batch_write(self.membership_items(conn, group, shards, expires)?.into())
            .await
    }

    /// Removes one membership. Returns whether the connection was a member.
    pub async fn leave(&self, conn_id: &str, tenant: &str, group: &Group) -> Result<bool, StoreError> {
        let key = group.key(tenant);
        let out = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", s(conn_pk(conn_id)))
            .key("sk", s(format!("g#{key}")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DeleteItem", e))?;
        let Some(old) = out.attributes else { return Ok(false) };
        let shard = get_n(&old, "shard")? as u16;
        self.table
            .batch_write(vec![delete(shard_pk(&key, shard), conn_id.to_owned())?])
            .await?;
        Ok(true)
    }

    /// The group names this connection is a member of.
    pub async fn groups_of(&self, conn_id: &str) -> Result<Vec<String>, StoreError> {
        let items = self.connection_items(conn_id).await?;
        Ok(items
            .iter()
            .filter_map(|i| i.get("group").and_then(|v| v.as_s().ok()).cloned())
            .collect())
    }

    pub async fn is_member(&self, conn_id: &str, tenant: &str, group: &Group) -> Result<bool, StoreError> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .key("pk", s(conn_pk(conn_id)))
            .key("sk", s(format!("g#{}", group.key(tenant))))
            .projection_expression("pk")
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        Ok(out.item.is_some())
    }

    async fn connection_items(&self, conn_id: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(conn_pk(conn_id)))
                .set_exclusive_start_key(start)
                .consistent_read(true)
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

    /// Deletes a connection and every membership it holds. Idempotent: an unknown id is fine,
    /// because `$disconnect`, a 410 and TTL may all race to clean the same connection.
    /// Returns how many memberships were removed.
    pub async fn close(&self, conn_id: &str) -> Result<usize, StoreError> {
        let items = self.connection_items(conn_id).await?;
        let mut deletes = Vec::with_capacity(items.len() * 2);
        let mut memberships = 0;
        for item in &items {
            let sk = get_s(item, "sk")?;
            if let Some(group_key) = sk.strip_prefix("g#") {
                let shard = get_n(item, "shard")? as u16;
                deletes.push(delete(shard_pk(group_key, shard), conn_id.to_owned())?);
                memberships += 1;
            }
            deletes.push(delete(conn_pk(conn_id), sk.to_owned())?);
        }
        self.table.batch_write(deletes).await?;
        Ok(memberships)
    }

    /// One page of one shard of a group's live connections.
    pub async fn members_page(
        &self,
        group_key: &str,
        shard: u16,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<MembersPage, StoreError> {
        let pk = shard_pk(group_key, shard);
        let start = start_after.map(|sk| Item::from([("pk".to_owned(), s(pk.clone())), ("sk".to_owned(), s(sk))]));
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .set_exclusive_start_key(start)
            .limit(limit.clamp(1, 10_000) as i32)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query", e))?;
        let now = epoch_seconds();
        let mut members = Vec::new();
        for item in out.items.unwrap_or_default() {
            // TTL deletes lazily (up to days later); an expired row is a connection API Gateway
            // has already closed.
            if get_n(&item, "expiresAt").is_ok_and(|e| e < now) {
                continue;
            }
            members.push(Member {
                connection_id: get_s(&item, "sk")?.to_owned(),
                user: get_s(&item, "user")?.to_owned(),
            });
        }
        let next = out
            .last_evaluated_key
            .and_then(|k| k.get("sk").and_then(|v| v.as_s().ok()).cloned());
        Ok(MembersPage { members, next })
    }

    /// All live connections of a group, every shard, every page (presence, small audiences).
    pub async fn all_members(&self, group_key: &str, shards: u16) -> Result<Vec<Member>, StoreError> {
        let mut all = Vec::new();
        for shard in 0..shards.max(1) {
            let mut start: Option<String> = None;
            loop {
                let page = self.members_page(group_key, shard, start.as_deref(), 1000).await?;
                all.extend(page.members);
                match page.next {
                    Some(n) => start = Some(n),
                    None => break,
                }
            }
        }
        Ok(all)
    }
}
