//! Removing a durable subscription, from the HTTP API or a control message on the queue.
//!
//! The subscription is what entitled the user's live connections to the group, so removing it
//! also removes those memberships at once: a student unenrolled from `course:42` stops receiving
//! its notifications now, not when the browser next reconnects (up to two hours later). Each
//! affected connection is told with `{"type":"left","group":…,"reason":"unsubscribed"}`.
//! Connections still entitled another way (the token's `groups` claim, a role) keep the group.

use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::delivery::{PostOutcome, Poster};
use crate::frames;
use crate::groups::Group;
use crate::policy::{Entitlement, RolePolicy, entitlement};
use crate::store::{Store, StoreError};

use super::dispatch::remove_gone;

#[derive(Clone, Debug)]
pub struct Unsubscriber {
    store: Store,
    poster: Poster,
    roles: RolePolicy,
}

impl Unsubscriber {
    pub fn new(store: Store, poster: Poster, roles: RolePolicy) -> Self {
        Self { store, poster, roles }
    }

    /// Deletes the subscription and the memberships it entitled. Returns how many live
    /// connections left the group.
    pub async fn unsubscribe(&self, tenant: &str, user: &str, group: &Group) -> Result<usize, StoreError> {
        self.store.subscriptions.unsubscribe(tenant, user, group).await?;
        // Every connection is a member of its user's personal group (one shard): that is the
        // user's list of live connections.
        let personal = Group::user(user);
        let connections = self.store.connections.all_members(&personal.key(tenant), 1).await?;
        let frame = left_frame(group);
        let mut left = 0;
        let mut gone = Vec::new();
        for member in connections {
            let Some(record) = self.store.connections.get(&member.connection_id).await? else {
                continue;
            };
            let principal = Principal {
                user: record.user,
                tenant: record.tenant,
                roles: record.roles,
                groups: record.groups,
            };
            if entitlement(&principal, group, &self.roles) != Entitlement::NeedsSubscription {
                continue;
            }
            if !self.store.connections.leave(&member.connection_id, tenant, group).await? {
                continue;
            }
            left += 1;
            // Telling the client is best effort: the membership is gone either way, which is what
            // stops delivery. A client that misses the frame learns it on its next join.
            match self.poster.post(&member.connection_id, &frame).await {
                PostOutcome::Gone => gone.push(member.connection_id),
                PostOutcome::Delivered => {}
                PostOutcome::Retryable(reason) | PostOutcome::Failed(reason) => {
                    tracing::warn!(connection = %member.connection_id, %reason, "left frame not delivered");
                }
            }
        }
        remove_gone(&self.store, &gone).await?;
        tracing::info!(%tenant, %user, %group, left, "unsubscribed");
        Ok(left)
    }
}

fn left_frame(group: &Group) -> String {
    let mut fields = Map::new();
    fields.insert("group".into(), Value::String(group.to_string()));
    fields.insert("reason".into(), Value::String("unsubscribed".into()));
    frames::reply("left", fields, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_left_frame_names_the_group_and_why() {
        let frame: Value = serde_json::from_str(&left_frame(&Group::parse("course:42").unwrap())).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "left", "group": "course:42", "reason": "unsubscribed"})
        );
    }
}
