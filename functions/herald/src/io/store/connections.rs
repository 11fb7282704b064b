//! Connections and group memberships (`ConnectionsTable`).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | connection (with the set of its memberships) | `c#{connectionId}` | `#meta` |
//! | membership (fan-out) | `g#{groupKey}#{shard}` | `{connectionId}` |
//!
//! The connection item carries a string set `memberships` of `{group}#{shard}`, so closing a
//! connection is one GetItem and a batch delete, and adding a membership is an atomic `ADD` —
//! two items per connection and group less than a reverse index would cost. A group's live
//! connections are a paginated Query per shard; big groups are spread over several shard
//! partitions so no single partition key runs hot.
//!
//! The connection item records since when its membership rows are visible (`openedAt` for
//! `$connect`'s, `joined:{group}#{shard}` for a join's): from then on every fan-out's (strongly
//! consistent) read of the group finds the connection, which is what lets a resume spare what
//! was posted to it live (`replay::spare`). A join writes its row before the item names it.
//! `$connect` writes its rows and the item in one batch, with `openedAt` a moment
//! ([`OPEN_MARGIN_MS`]) after the batch is sent; should the batch take longer, `openedAt` is
//! moved to when it returned before `$connect` answers. No frame, so no resume, reaches a
//! connection before its `$connect` has answered.
//!
//! A connection's first complete resume marks it caught up: `caughtUp` on the item, `caughtUp`
//! on each membership row. Fan-outs post a frame with its cursor only to rows so marked (see
//! `horizon`, "A live cursor is a resume point once the connection has caught up").

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::StreamExt;

use super::{Item, StoreError, Table, delete_request, epoch_seconds, get_list, get_n, get_s, list, n, put_request, s};
use crate::domain::cursor::now_millis;
use crate::domain::groups::{Group, stable_hash};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub id: String,
    pub user: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// The token's `groups` claim: entitlements checked again on `join`/`resume`.
    pub groups: Vec<String>,
    pub connected_at: i64,
    /// Opted in to batch frames (`frames::batch`) at `$connect`.
    pub batch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub connection_id: String,
    pub user: String,
    /// When the row was written (epoch ms; absent on rows written before it was recorded).
    pub joined_at: Option<u64>,
    /// The connection has caught up (its first resume is complete): its frames carry cursors.
    pub caught_up: bool,
    /// The connection takes batch frames: a fan-out may aggregate its posts.
    pub batch: bool,
}

impl Member {
    /// Whether a 410 for this row's connection may mean "not open yet": the row was written less
    /// than [`CONNECT_GRACE_MS`] ago, so the connection may be younger than that. Decided from
    /// the row the fan-out already read, without reading the connection item.
    pub fn maybe_connecting(&self, now_ms: u64) -> bool {
        self.joined_at.is_some_and(|at| within_connect_grace(at, now_ms))
    }
}

/// A connection's memberships, as its item records them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memberships {
    pub groups: Vec<Membership>,
    /// Marked by [`Connections::mark_caught_up`].
    pub caught_up: bool,
    /// The connection takes batch frames.
    pub batch: bool,
}

/// What [`Connections::join`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    Joined,
    /// The connection's item is gone.
    Gone,
    /// The connection holds as many memberships as it may.
    Full,
}

/// One of a connection's memberships, as its item records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The group's name (`course:42`, `user:u1`, `tenant`).
    pub group: String,
    /// Since when (epoch ms) every fan-out's read of the group's rows finds this connection;
    /// `None` on items written before it was recorded.
    pub visible_since: Option<u64>,
}

/// Whether `now_ms` is within [`CONNECT_GRACE_MS`] of `since_ms` (a connect request, a row's write).
fn within_connect_grace(since_ms: u64, now_ms: u64) -> bool {
    now_ms < since_ms.saturating_add(CONNECT_GRACE_MS)
}

/// A closed connection and the groups it was removed from (empty when it was already gone),
/// for presence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    pub connection: String,
    pub user: String,
    pub tenant: String,
    pub groups: Vec<Group>,
}

/// How long after its connect request a connection's 410s are not taken as gone. API Gateway
/// answers 410 to a post for a connection whose `$connect` has not returned yet (the authorizer
/// and `$connect` each may take up to its 29 s integration timeout), and `$connect` writes the
/// connection's records before it returns. Taking that 410 as gone deleted the records of a
/// connection about to open: it then got nothing live, and its resume read no groups (the chaos
/// run lost hundreds of one device's notifications). A connection that really is gone within
/// this time is cleaned by its `$disconnect`, or by the first 410 after it.
pub const CONNECT_GRACE_MS: u64 = 60_000;

/// What [`Connections::close_gone`] did with each connection answered 410 for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gone {
    /// Closed: the item and every membership it listed are deleted.
    pub closed: Vec<Closed>,
    /// No item: a membership row that drew the post belongs to nobody (a join that raced a
    /// disconnect); the caller deletes the row.
    pub orphans: Vec<String>,
}

enum GoneOne {
    Closed(Closed),
    Orphan(String),
    /// Still inside its `$connect`: left as it is.
    Connecting,
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

/// One membership row: a connection in one shard of a group (its storage key). A post drawn
/// from it that finds the connection gone for good removes it; a retry job carries the rows of
/// its connections for that.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRow {
    pub connection: String,
    pub group_key: String,
    pub shard: u16,
}

fn conn_pk(id: &str) -> String {
    format!("c#{id}")
}

/// How long after `$connect` sends its batch its `openedAt` is set: the batch normally returns
/// well within it, so one request writes everything; a later `openedAt` only means that a
/// resume spares less (sends again what arrived live in that moment).
pub const OPEN_MARGIN_MS: u64 = 100;

/// The partition key of one shard of a group's membership list.
pub fn shard_pk(group_key: &str, shard: u16) -> String {
    format!("g#{group_key}#{shard}")
}

fn shard_of(connection_id: &str, shards: u16) -> u16 {
    (stable_hash(connection_id) % u64::from(shards.max(1))) as u16
}

impl Connections {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    fn forward(&self, conn: &ConnectionRecord, group: &Group, shards: u16, expires: i64) -> (Item, String) {
        let shard = shard_of(&conn.id, group.shards(shards));
        let item = Item::from([
            ("pk".into(), s(shard_pk(&group.key(&conn.tenant), shard))),
            ("sk".into(), s(conn.id.clone())),
            ("user".into(), s(conn.user.clone())),
            ("expiresAt".into(), n(expires)),
            // The connect request's time for the rows `$connect` writes (a connection's first
            // minute counts from it), the write's time for a join's (a record without it).
            (
                "joinedAt".into(),
                n(if conn.connected_at > 0 {
                    conn.connected_at
                } else {
                    now_millis() as i64
                }),
            ),
        ]);
        let mut item = item;
        if conn.batch {
            item.insert("batch".into(), AttributeValue::Bool(true));
        }
        (item, format!("{group}#{shard}"))
    }

    /// Stores a new connection and its initial memberships in one batch, the item recording by
    /// when all of it was visible (see the module's note).
    pub async fn open(&self, conn: &ConnectionRecord, groups: &[Group], shards: u16, ttl_seconds: u64) -> Result<(), StoreError> {
        let expires = epoch_seconds() + ttl_seconds as i64;
        let mut writes = Vec::with_capacity(groups.len() + 1);
        let mut memberships = Vec::with_capacity(groups.len());
        for g in groups {
            let (item, member) = self.forward(conn, g, shards, expires);
            writes.push(put_request(item)?);
            memberships.push(member);
        }
        let opened = now_millis() + OPEN_MARGIN_MS;
        let mut meta = Item::from([
            ("pk".into(), s(conn_pk(&conn.id))),
            ("sk".into(), s("#meta")),
            ("user".into(), s(conn.user.clone())),
            ("tenant".into(), s(conn.tenant.clone())),
            ("roles".into(), list(&conn.roles)),
            ("groups".into(), list(&conn.groups)),
            ("connectedAt".into(), n(conn.connected_at)),
            ("openedAt".into(), n(opened as i64)),
            ("expiresAt".into(), n(expires)),
        ]);
        if !memberships.is_empty() {
            meta.insert("memberships".into(), AttributeValue::Ss(memberships));
        }
        if conn.batch {
            meta.insert("batch".into(), AttributeValue::Bool(true));
        }
        writes.push(put_request(meta)?);
        self.table.batch_write(writes).await?;
        let written = now_millis();
        if written > opened {
            let out = self
                .update_meta(&conn.id)
                .update_expression("SET openedAt = :at")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":at", n(written as i64))
                .send()
                .await;
            match out {
                Ok(_) => {}
                // Gone already (its TTL, a cleanup): nothing left to date.
                Err(e) if super::conditional_failed(&e) => {}
                Err(e) => return Err(StoreError::dynamo("UpdateItem", e)),
            }
        }
        Ok(())
    }

    /// An UpdateItem of connection `id`'s item.
    fn update_meta(&self, id: &str) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(conn_pk(id)))
            .key("sk", s("#meta"))
    }

    async fn meta(&self, id: &str) -> Result<Option<Item>, StoreError> {
        self.table.get(conn_pk(id), "#meta").await
    }

    pub async fn get(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        let Some(item) = self.meta(id).await? else { return Ok(None) };
        Ok(Some(ConnectionRecord {
            id: id.to_owned(),
            user: get_s(&item, "user")?.to_owned(),
            tenant: get_s(&item, "tenant")?.to_owned(),
            roles: get_list(&item, "roles"),
            groups: get_list(&item, "groups"),
            connected_at: get_n(&item, "connectedAt")?,
            batch: takes_batches(&item),
        }))
    }

    /// Adds a membership: the row, then the item's record of it and of when the row was written
    /// (see the module's note). The item holds at most `max` memberships; re-joining a group it
    /// holds is always fine.
    pub async fn join(
        &self,
        conn: &ConnectionRecord,
        group: &Group,
        shards: u16,
        ttl_seconds: u64,
        max: usize,
    ) -> Result<Joined, StoreError> {
        let expires = epoch_seconds() + ttl_seconds as i64;
        let (item, member) = self.forward(conn, group, shards, expires);
        let row = (get_s(&item, "pk")?.to_owned(), conn.id.clone());
        self.table.batch_write(vec![put_request(item)?]).await?;
        let written = now_millis();
        let added = self
            .update_meta(&conn.id)
            .update_expression("ADD memberships :m SET #joined = :at")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(memberships) OR size(memberships) < :max OR contains(memberships, :one))",
            )
            .expression_attribute_names("#joined", joined_attribute(&member))
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member.clone()]))
            .expression_attribute_values(":one", s(member))
            .expression_attribute_values(":max", n(max as i64))
            .expression_attribute_values(":at", n(written as i64))
            .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let refused = match added {
            Ok(out) => {
                // A join after the catch-up: the row was written unmarked (a re-join overwrote
                // the mark), and nothing else would mark it.
                if out.attributes.as_ref().is_some_and(is_caught_up) {
                    self.mark_row(&row.0, &row.1).await?;
                }
                return Ok(Joined::Joined);
            }
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    if failed.item.is_some() { Joined::Full } else { Joined::Gone }
                }
                _ => return Err(StoreError::dynamo("UpdateItem", e)),
            },
        };
        // Not recorded: the row would only draw posts (and 410s) nobody reads.
        self.table.batch_write(vec![delete_request(row.0, row.1)?]).await?;
        Ok(refused)
    }

    /// Removes one membership. Returns whether the connection was a member.
    pub async fn leave(&self, conn_id: &str, tenant: &str, group: &Group) -> Result<bool, StoreError> {
        let Some(meta) = self.meta(conn_id).await? else { return Ok(false) };
        let name = group.to_string();
        let Some(member) = memberships(&meta)
            .into_iter()
            .find(|m| m.rsplit_once('#').is_some_and(|(g, _)| g == name))
        else {
            return Ok(false);
        };
        let shard: u16 = member.rsplit_once('#').and_then(|(_, sh)| sh.parse().ok()).unwrap_or(0);
        self.update_meta(conn_id)
            .update_expression("DELETE memberships :m REMOVE #joined")
            .expression_attribute_names("#joined", joined_attribute(&member))
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member]))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        self.table
            .batch_write(vec![delete_request(shard_pk(&group.key(tenant), shard), conn_id.to_owned())?])
            .await?;
        Ok(true)
    }

    /// This connection's memberships; `None` when its item is gone.
    pub async fn memberships_of(&self, conn_id: &str) -> Result<Option<Memberships>, StoreError> {
        let Some(meta) = self.meta(conn_id).await? else {
            return Ok(None);
        };
        let opened = get_n(&meta, "openedAt").ok().map(|t| t.max(0) as u64);
        let groups = memberships(&meta)
            .into_iter()
            .filter_map(|m| {
                let joined = get_n(&meta, &joined_attribute(&m)).ok().map(|t| t.max(0) as u64);
                m.rsplit_once('#').map(|(g, _)| Membership {
                    group: g.to_owned(),
                    // A membership with no join record is one `$connect` wrote.
                    visible_since: joined.or(opened),
                })
            })
            .collect();
        Ok(Some(Memberships {
            groups,
            caught_up: is_caught_up(&meta),
            batch: takes_batches(&meta),
        }))
    }

    /// Marks a connection caught up: its item first, so that a join from then on marks its own
    /// row, then the rows of the memberships its item names. Returns false when it was marked
    /// already or its item is gone. A row a leave removed meanwhile is not written back, and a
    /// row left unmarked only means frames without a cursor.
    pub async fn mark_caught_up(&self, conn_id: &str) -> Result<bool, StoreError> {
        let out = self
            .update_meta(conn_id)
            .update_expression("SET caughtUp = :t")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(caughtUp)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let meta = match out {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if super::conditional_failed(&e) => return Ok(false),
            Err(e) => return Err(StoreError::dynamo("UpdateItem", e)),
        };
        let tenant = get_s(&meta, "tenant")?;
        let rows: Vec<(String, String)> = memberships(&meta)
            .into_iter()
            .filter_map(|m| {
                let (group, shard) = m.rsplit_once('#')?;
                let group = Group::parse(group).ok()?;
                let shard: u16 = shard.parse().ok()?;
                Some((shard_pk(&group.key(tenant), shard), conn_id.to_owned()))
            })
            .collect();
        // One conditional UpdateItem per row, in parallel: a transaction would be one request
        // but costs twice the write units, and moto copies the whole table for each one.
        let marked: Vec<Result<(), StoreError>> = futures_util::stream::iter(rows)
            .map(|(pk, sk)| async move { self.mark_row(&pk, &sk).await })
            .buffer_unordered(8)
            .collect()
            .await;
        marked.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(true)
    }

    /// Marks one membership row caught up, unless it is gone.
    async fn mark_row(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("SET caughtUp = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if super::conditional_failed(&e) => Ok(()),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// Deletes a connection and every membership it holds. Idempotent: an unknown id is fine,
    /// because `$disconnect`, a 410 and TTL may all race to clean the same connection.
    /// Returns how many memberships were removed.
    pub async fn close(&self, conn_id: &str) -> Result<Closed, StoreError> {
        let Some(meta) = self.meta(conn_id).await? else {
            return Ok(Closed::default());
        };
        self.close_item(conn_id, &meta).await
    }

    async fn close_item(&self, conn_id: &str, meta: &Item) -> Result<Closed, StoreError> {
        let tenant = get_s(meta, "tenant")?.to_owned();
        let user = get_s(meta, "user").unwrap_or_default().to_owned();
        let members = memberships(meta);
        let mut deletes = Vec::with_capacity(members.len() + 1);
        let mut groups = Vec::with_capacity(members.len());
        for m in &members {
            let Some((name, shard)) = m.rsplit_once('#') else { continue };
            let (Ok(group), Ok(shard)) = (Group::parse(name), shard.parse::<u16>()) else {
                continue;
            };
            deletes.push(delete_request(shard_pk(&group.key(&tenant), shard), conn_id.to_owned())?);
            groups.push(group);
        }
        // Memberships first, the connection item last: a crash in between leaves the item, so a
        // repeated close still finds what to clean.
        self.table.batch_write(deletes).await?;
        self.table
            .batch_write(vec![delete_request(conn_pk(conn_id), "#meta".to_owned())?])
            .await?;
        Ok(Closed {
            connection: conn_id.to_owned(),
            user,
            tenant,
            groups,
        })
    }

    /// Acts on connections API Gateway answered 410 for, a few at a time: each is closed, unless
    /// it is still inside its `$connect` (see [`CONNECT_GRACE_MS`]), or its item is already gone
    /// (an orphan: the caller removes the membership row that drew the post).
    pub async fn close_gone(&self, gone: &[String], now_ms: u64) -> Result<Gone, StoreError> {
        // Owned ids and `async move`: a closure borrowing its argument trips the compiler's
        // higher-ranked lifetime check once the future is held across a handler's await.
        let results: Vec<Result<GoneOne, StoreError>> = futures_util::stream::iter(gone.iter().cloned())
            .map(|c| async move {
                let Some(meta) = self.meta(&c).await? else {
                    return Ok(GoneOne::Orphan(c));
                };
                let connected_at = get_n(&meta, "connectedAt").unwrap_or(0).max(0) as u64;
                if within_connect_grace(connected_at, now_ms) {
                    return Ok(GoneOne::Connecting);
                }
                Ok(GoneOne::Closed(self.close_item(&c, &meta).await?))
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut out = Gone::default();
        for r in results {
            match r? {
                GoneOne::Closed(closed) => out.closed.push(closed),
                GoneOne::Orphan(c) => out.orphans.push(c),
                GoneOne::Connecting => {}
            }
        }
        Ok(out)
    }

    /// Deletes membership rows, of any groups and shards. A 410 from a row whose connection
    /// item is already gone (a join that raced a disconnect) is cleaned here: `close` finds
    /// nothing to read the memberships from, and the row would otherwise draw a post and a 410
    /// on every notification until its TTL.
    pub async fn remove_rows(&self, rows: &[MemberRow]) -> Result<(), StoreError> {
        // One batch must not name a row twice (a connection can be reported gone more than once).
        let unique: std::collections::BTreeSet<(String, &String)> =
            rows.iter().map(|r| (shard_pk(&r.group_key, r.shard), &r.connection)).collect();
        if unique.is_empty() {
            return Ok(());
        }
        let deletes = unique
            .into_iter()
            .map(|(pk, id)| delete_request(pk, id.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        self.table.batch_write(deletes).await
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
            // A row written before the read began is in it: a resume counts on that to spare
            // what a fan-out posted to a connection after its join (`replay::spare`).
            .consistent_read(true)
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
                joined_at: get_n(&item, "joinedAt").ok().map(|t| t.max(0) as u64),
                caught_up: is_caught_up(&item),
                batch: takes_batches(&item),
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

/// The item attribute that records when a join's row was written.
fn joined_attribute(member: &str) -> String {
    format!("joined:{member}")
}

fn is_caught_up(item: &Item) -> bool {
    matches!(item.get("caughtUp"), Some(AttributeValue::Bool(true)))
}

fn takes_batches(item: &Item) -> bool {
    matches!(item.get("batch"), Some(AttributeValue::Bool(true)))
}

fn memberships(meta: &Item) -> Vec<String> {
    match meta.get("memberships") {
        Some(AttributeValue::Ss(set)) => set.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(joined_at: Option<u64>) -> Member {
        Member {
            connection_id: "c".into(),
            user: "u".into(),
            joined_at,
            caught_up: false,
            batch: false,
        }
    }

    /// A 410 from a row written within the grace may be a connection inside its `$connect`; an
    /// older row, or one written before rows recorded the time, is taken at its word.
    #[test]
    fn only_a_row_younger_than_the_grace_may_be_connecting() {
        let now = 10_000_000;
        assert!(member(Some(now - 1_000)).maybe_connecting(now));
        assert!(member(Some(now - CONNECT_GRACE_MS + 1)).maybe_connecting(now));
        assert!(!member(Some(now - CONNECT_GRACE_MS)).maybe_connecting(now));
        assert!(!member(None).maybe_connecting(now));
    }
}
