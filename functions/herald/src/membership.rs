//! Live group membership beyond the pure rule of [`crate::policy`]: whether a principal is
//! entitled to a group once durable subscriptions are consulted ([`entitled`], used by `join`,
//! `resume` and the HTTP API), and what removing a subscription does to live connections
//! ([`Unsubscriber`], used by the HTTP API and the `unsubscribe` control message).
//!
//! The subscription is what entitled the user's live connections to the group, so removing it
//! also removes those memberships at once: a student unenrolled from `course:42` stops receiving
//! its notifications now, not when the browser next reconnects (up to two hours later). Each
//! affected connection is told with `{"type":"left","group":…,"reason":"unsubscribed"}`.
//! Connections still entitled another way (the token's `groups` claim, a role) keep the group.

use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::config::Limits;
use crate::delivery::{PostOutcome, Poster};
use crate::frames::{self, ErrorCode, ErrorFrame};
use crate::gateway::Caller;
use crate::groups::Group;
use crate::metrics::Metrics;
use crate::policy::{Entitlement, RolePolicy, entitlement};
use crate::store::{ConnectionRecord, Store, StoreError};

/// May this principal receive `group`'s notifications? The policy decides without I/O; only
/// `NeedsSubscription` costs a read.
pub async fn entitled(store: &Store, roles: &RolePolicy, principal: &Principal, group: &Group) -> Result<bool, StoreError> {
    Ok(match entitlement(principal, group, roles) {
        Entitlement::Implicit | Entitlement::Token => true,
        Entitlement::Denied => false,
        Entitlement::NeedsSubscription => store.subscriptions.exists(&principal.tenant, &principal.user, group).await?,
    })
}

/// `join` and `leave` of a live connection, authorized server-side on every join.
#[derive(Clone, Debug)]
pub struct Joins {
    store: Store,
    limits: Limits,
    roles: RolePolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("refused: {}", .0.message)]
    Refused(ErrorFrame),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Joins {
    pub fn new(store: Store, limits: Limits, roles: RolePolicy) -> Self {
        Self { store, limits, roles }
    }

    pub async fn join(&self, who: &Caller, name: &str, reference: Option<Value>) -> Result<String, JoinError> {
        let refuse = |code, msg: String| JoinError::Refused(ErrorFrame::new(code, msg, reference.clone()));
        let group = Group::parse(name).map_err(|e| refuse(ErrorCode::BadRequest, e.to_string()))?;
        if !entitled(&self.store, &self.roles, &who.principal, &group).await? {
            tracing::info!(connection = %who.connection_id, user = %who.principal.user, group = %group, "join denied");
            Metrics::new("ws-join").count("JoinsDenied", 1).flush();
            return Err(refuse(ErrorCode::Forbidden, format!("not entitled to join {group}")));
        }
        let record = ConnectionRecord {
            id: who.connection_id.clone(),
            user: who.principal.user.clone(),
            tenant: who.principal.tenant.clone(),
            roles: Vec::new(),
            groups: Vec::new(),
            connected_at: 0,
        };
        self.store
            .connections
            .join(&record, &group, self.limits.membership_shards, self.limits.connection_ttl_seconds)
            .await?;
        Metrics::new("ws-join").count("Joins", 1).flush();
        Ok(frames::reply("joined", group_field(&group), reference))
    }

    pub async fn leave(&self, who: &Caller, name: &str, reference: Option<Value>) -> Result<String, JoinError> {
        let group =
            Group::parse(name).map_err(|e| JoinError::Refused(ErrorFrame::new(ErrorCode::BadRequest, e.to_string(), reference.clone())))?;
        if matches!(group, Group::User(_) | Group::Tenant | Group::All) {
            return Err(JoinError::Refused(ErrorFrame::new(
                ErrorCode::BadRequest,
                format!("{group} cannot be left"),
                reference,
            )));
        }
        self.store
            .connections
            .leave(&who.connection_id, &who.principal.tenant, &group)
            .await?;
        Ok(frames::reply("left", group_field(&group), reference))
    }
}

fn group_field(group: &Group) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("group".into(), group.to_string().into());
    m
}

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
        self.store.connections.close_all(&gone).await?;
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
