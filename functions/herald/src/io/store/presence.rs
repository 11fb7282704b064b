//! Who is online in a group, for presence events (`ConnectionsTable`).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | a user's presence in a group | `p#{groupKey}` | `{user}` |
//!
//! The item holds the string set `conns` of the user's connections in the group and `leftAt`
//! (epoch ms), the last departure: while the set is empty, an offline event waits out the grace
//! period from it. Sets make arrivals and
//! departures idempotent (a repeated join or a second cleanup of one connection changes
//! nothing), and every transition is one conditional update, so two instances handling the
//! same user's connections cannot both announce it.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{StoreError, Table, conditional_failed, n, s};

#[derive(Clone, Debug)]
pub struct Presences {
    table: Table,
}

/// What a departure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The connection was not present (already gone), or others of the user remain.
    Nothing,
    /// It was the user's last connection: offline once `left_at` is `grace` old, unless the
    /// user comes back.
    Pending { left_at: u64 },
}

fn pk(group_key: &str) -> String {
    format!("p#{group_key}")
}

impl Presences {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    /// Adds a connection of `user`; `true` when the user was offline and not about to be (no
    /// other connection, no departure within the grace period): announce them online.
    pub async fn arrive(&self, group_key: &str, user: &str, connection: &str, expires: i64) -> Result<bool, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .update_expression("ADD conns :c SET expiresAt = :exp REMOVE leftAt")
            .expression_attribute_values(":c", AttributeValue::Ss(vec![connection.to_owned()]))
            .expression_attribute_values(":exp", n(expires))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        let old = out.attributes.unwrap_or_default();
        let had_connections = old.get("conns").and_then(|v| v.as_ss().ok()).is_some_and(|c| !c.is_empty());
        Ok(!had_connections && !old.contains_key("leftAt"))
    }

    /// Removes a connection of `user`, recording `now` as the time the user left, in one
    /// atomic update: a separate second step would leave a moment in which the set is empty
    /// and no departure is recorded, and an arrival then would announce the user online again.
    /// `leftAt` only matters once the set is empty (an arrival while other connections remain
    /// is no news anyway); the check is queued only then.
    pub async fn depart(&self, group_key: &str, user: &str, connection: &str, now: u64) -> Result<Departure, StoreError> {
        let removed = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .update_expression("DELETE conns :c SET leftAt = :now")
            .condition_expression("contains(conns, :id)")
            .expression_attribute_values(":c", AttributeValue::Ss(vec![connection.to_owned()]))
            .expression_attribute_values(":id", s(connection))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match removed {
            Ok(out) => {
                let last = out
                    .attributes
                    .unwrap_or_default()
                    .get("conns")
                    .and_then(|v| v.as_ss().ok())
                    .is_none_or(|c| c.is_empty());
                Ok(if last {
                    Departure::Pending { left_at: now }
                } else {
                    Departure::Nothing
                })
            }
            Err(e) if conditional_failed(&e) => Ok(Departure::Nothing),
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// The grace period after `left_at` is over: `true` when the user is still away (the item is
    /// removed, announce them offline), `false` when they came back (or left again later, which
    /// has its own pending check).
    pub async fn settle(&self, group_key: &str, user: &str, left_at: u64) -> Result<bool, StoreError> {
        let deleted = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .key("pk", s(pk(group_key)))
            .key("sk", s(user))
            .condition_expression("leftAt = :left AND attribute_not_exists(conns)")
            .expression_attribute_values(":left", n(left_at))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::dynamo("DeleteItem", e)),
        }
    }
}
