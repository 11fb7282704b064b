//! Live group membership beyond the pure rule of [`crate::domain::policy`]: whether a principal is
//! entitled to a group once durable subscriptions are consulted ([`entitled`], used by `join`,
//! `resume` and the HTTP API), and what removing a subscription does to live connections
//! ([`Unsubscriber`], used by the HTTP API and the `unsubscribe` control message); and who is
//! online in a group, for its members, page by page ([`presence_of`], `GET /groups/{g}/presence`).
//!
//! The subscription is what entitled the user's live connections to the group, so removing it
//! also removes those memberships at once: a student unenrolled from `course:42` stops receiving
//! its notifications now, not when the browser next reconnects (up to two hours later). Each
//! affected connection is told with `{"type":"left","group":…,"reason":"unsubscribed"}`.
//! Connections still entitled another way (the token's `groups` claim, a role) keep the group.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::domain::auth::Principal;
use crate::domain::config::Limits;
use crate::domain::cursor::now_millis;
use crate::domain::frames::{self, ErrorCode, ErrorFrame};
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::policy::{Entitlement, RolePolicy, entitlement};
use crate::io::delivery::{PostOutcome, Poster};
use crate::io::store::{ConnectionRecord, Joined, Store, StoreError};
use crate::services::gateway::Caller;
use crate::services::limiter::Limiter;
use crate::services::presence::{Presence, PresenceError};

/// May this principal receive `group`'s notifications? The policy decides without I/O; only
/// `NeedsSubscription` costs a read.
pub async fn entitled(store: &Store, roles: &RolePolicy, principal: &Principal, group: &Group) -> Result<bool, StoreError> {
    Ok(match entitlement(principal, group, roles) {
        Entitlement::Implicit | Entitlement::Token => true,
        Entitlement::Denied => false,
        Entitlement::NeedsSubscription => store.subscriptions.exists(&principal.tenant, &principal.user, group).await?,
    })
}

/// The topics whose log a principal may read without a connection (`missed`, the unread count):
/// personal, tenant, platform-wide, and the groups the token or a durable subscription entitles
/// them to.
pub async fn readable_topics(store: &Store, p: &Principal) -> Result<Vec<Group>, StoreError> {
    let mut topics: Vec<Group> = vec![Group::user(&p.user), Group::Tenant, Group::All];
    topics.extend(
        p.groups
            .iter()
            .filter_map(|g| Group::parse(g).ok())
            .filter(|g| matches!(g, Group::Named { .. })),
    );
    topics.extend(store.subscriptions.list(&p.tenant, &p.user).await?);
    let mut seen = HashSet::new();
    topics.retain(|g| seen.insert(g.clone()));
    Ok(topics)
}

/// `join` and `leave` of a live connection, authorized server-side on every join.
///
/// A join that may announce presence is admitted on the user's work budget, reserving the
/// presence cap, and charged twice the posts its `online` event made: the `offline` that follows
/// it is posted by a presence check, where there is no caller left to charge. Joining and
/// leaving a hundred busy rooms would otherwise make thousands of posts for a few frames.
#[derive(Clone, Debug)]
pub struct Joins {
    store: Store,
    limits: Limits,
    roles: RolePolicy,
    presence: Presence,
    limiter: Limiter,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("refused: {}", .0.message)]
    Refused(ErrorFrame),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

impl JoinError {
    /// The error frame a refused join or leave is answered with; `Err(self)` for a failure
    /// below (storage, presence), which fails the invocation instead.
    pub fn refusal(self) -> Result<ErrorFrame, JoinError> {
        match self {
            JoinError::Refused(frame) => Ok(frame),
            other => Err(other),
        }
    }
}

impl Joins {
    /// `limiter` carries the users' work budget (`Limiter::with_work`).
    pub fn new(store: Store, limits: Limits, roles: RolePolicy, presence: Presence, limiter: Limiter) -> Self {
        Self {
            store,
            limits,
            roles,
            presence,
            limiter,
        }
    }

    /// `received_ms`: when API Gateway received the frame (what the work budget is charged at).
    pub async fn join(&self, who: &Caller, name: &str, reference: Option<Value>, received_ms: i64) -> Result<String, JoinError> {
        let refuse = |code, msg: String| JoinError::Refused(ErrorFrame::new(code, msg, reference.clone()));
        let group = Group::parse(name).map_err(|e| refuse(ErrorCode::BadRequest, e.to_string()))?;
        if !entitled(&self.store, &self.roles, &who.principal, &group).await? {
            tracing::info!(connection = %who.connection_id, user = %who.principal.user, group = %group, "join denied");
            Metrics::new("ws-join").count("JoinsDenied", 1).flush();
            return Err(refuse(ErrorCode::Forbidden, format!("not entitled to join {group}")));
        }
        let p = &who.principal;
        let reserved = self.presence.most_posts(&group);
        if reserved > 0
            && let Some(ms) = self.limiter.admit_work(&p.tenant, &p.user, received_ms, reserved).await?
        {
            Metrics::new("ws-join").count("WorkLimited", 1).flush();
            return Err(JoinError::Refused(ErrorFrame::rate_limited(ms, reference)));
        }
        let record = ConnectionRecord {
            id: who.connection_id.clone(),
            user: who.principal.user.clone(),
            tenant: who.principal.tenant.clone(),
            roles: Vec::new(),
            groups: Vec::new(),
            connected_at: 0,
            batch: who.batch,
        };
        let joined = self
            .store
            .connections
            .join(
                &record,
                &group,
                self.limits.membership_shards,
                self.limits.connection_ttl_seconds,
                self.limits.max_groups_per_connection,
            )
            .await?;
        if joined != Joined::Joined && reserved > 0 {
            // Refused after all: nothing was posted.
            self.limiter.settle_work(&p.tenant, &p.user, reserved, 0).await?;
        }
        match joined {
            Joined::Joined => {}
            // The connection's item is gone while its socket is open (a 410 taken as gone, its
            // TTL): a membership now would deliver nothing that a resume could find. `internal`,
            // not a refusal: the client keeps the group and re-joins it on its next connection.
            Joined::Gone => {
                tracing::warn!(connection = %who.connection_id, group = %group, "join on a connection without its item");
                return Err(refuse(
                    ErrorCode::Internal,
                    "this connection is no longer registered; reconnect".into(),
                ));
            }
            Joined::Full => {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    format!(
                        "a connection may be in at most {} groups; leave one first",
                        self.limits.max_groups_per_connection
                    ),
                ));
            }
        }
        let posts = self
            .presence
            .arrived(&p.tenant, &p.user, &who.connection_id, std::slice::from_ref(&group))
            .await?;
        if reserved > 0 && 2 * posts != reserved {
            self.limiter.settle_work(&p.tenant, &p.user, reserved, 2 * posts).await?;
        }
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
        let p = &who.principal;
        if self.store.connections.leave(&who.connection_id, &p.tenant, &group).await? {
            self.presence
                .departed(&p.tenant, &p.user, &who.connection_id, std::slice::from_ref(&group))
                .await?;
        }
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
    presence: Presence,
}

impl Unsubscriber {
    pub fn new(store: Store, poster: Poster, roles: RolePolicy, presence: Presence) -> Self {
        Self {
            store,
            poster,
            roles,
            presence,
        }
    }

    /// Deletes the subscription and the memberships it entitled. Returns how many live
    /// connections left the group.
    pub async fn unsubscribe(&self, tenant: &str, user: &str, group: &Group) -> Result<usize, PresenceError> {
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
            self.presence
                .departed(tenant, user, &member.connection_id, std::slice::from_ref(group))
                .await?;
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
        let gone = self.store.connections.close_gone(&gone, now_millis()).await?;
        self.presence.closed(&gone.closed).await?;
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

/// Where a presence listing goes on: the shard and the last connection id listed. Opaque to
/// callers (URL-safe base64 of `{shard}\n{connection}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceToken {
    pub shard: u16,
    pub after: Option<String>,
}

impl PresenceToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}\n{}", self.shard, self.after.as_deref().unwrap_or("")))
    }

    /// `None` for anything this server did not hand out (or for a shard the group does not have).
    pub fn decode(token: &str, shards: u16) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (shard, after) = text.split_once('\n')?;
        let shard: u16 = shard.parse().ok().filter(|s| *s < shards)?;
        if after.len() > 256 || after.chars().any(char::is_control) {
            return None;
        }
        Some(Self {
            shard,
            after: (!after.is_empty()).then(|| after.to_owned()),
        })
    }
}

/// Connections listed by one presence page at most.
pub const PRESENCE_PAGE: usize = 1000;

/// One page of a group's live connections: at most `limit` of them, distinct users sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresencePage {
    pub users: Vec<String>,
    pub connections: usize,
    pub next: Option<PresenceToken>,
}

/// A presence listing refused (with the message the caller sees), or a failure below.
#[derive(Debug, thiserror::Error)]
pub enum PresenceListError {
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `GET /groups/{group}/presence`: one page of who is online in `group` (of `shards` shards),
/// for its members. Every user is a member of `tenant`: its presence is the whole tenant's
/// online users, which is an operator's view (the service or admin role), not a member's.
pub async fn presence_of(
    store: &Store,
    roles: &RolePolicy,
    p: &Principal,
    group: &Group,
    shards: u16,
    from: PresenceToken,
    limit: usize,
) -> Result<PresencePage, PresenceListError> {
    if *group == Group::Tenant && !p.is_privileged() {
        return Err(PresenceListError::Forbidden(
            "the tenant's presence needs the service or admin role".into(),
        ));
    }
    if !entitled(store, roles, p, group).await? {
        return Err(PresenceListError::Forbidden(format!("not a member of {group}")));
    }
    Ok(presence_page(store, &group.key(&p.tenant), shards, from, limit).await?)
}

/// Reads a group's membership shards in order from `from`, a page at a time, until `limit`
/// connections are listed. A user with connections on two pages is listed on both.
pub async fn presence_page(
    store: &Store,
    group_key: &str,
    shards: u16,
    from: PresenceToken,
    limit: usize,
) -> Result<PresencePage, StoreError> {
    let (mut shard, mut after) = (from.shard, from.after);
    let mut members = Vec::new();
    let mut next = None;
    while shard < shards {
        let page = store
            .connections
            .members_page(group_key, shard, after.as_deref(), limit - members.len())
            .await?;
        members.extend(page.members);
        match page.next {
            Some(last) => after = Some(last),
            None => {
                shard += 1;
                after = None;
            }
        }
        if members.len() >= limit {
            if shard < shards {
                next = Some(PresenceToken { shard, after });
            }
            break;
        }
    }
    let mut users: Vec<String> = members.iter().map(|m| m.user.clone()).collect::<HashSet<_>>().into_iter().collect();
    users.sort();
    Ok(PresencePage {
        users,
        connections: members.len(),
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_tokens_round_trip_and_refuse_what_was_not_handed_out() {
        let t = PresenceToken {
            shard: 2,
            after: Some("Ab3=".into()),
        };
        assert_eq!(PresenceToken::decode(&t.encode(), 4), Some(t.clone()));
        assert_eq!(PresenceToken::decode(&t.encode(), 2), None, "no such shard");
        let start = PresenceToken { shard: 1, after: None };
        assert_eq!(PresenceToken::decode(&start.encode(), 4), Some(start));
        for bad in ["", "not base64!", "MQ", &URL_SAFE_NO_PAD.encode("x\ny")] {
            assert_eq!(PresenceToken::decode(bad, 4), None, "{bad}");
        }
    }

    #[test]
    fn the_left_frame_names_the_group_and_why() {
        let frame: Value = serde_json::from_str(&left_frame(&Group::parse("course:42").unwrap())).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "left", "group": "course:42", "reason": "unsubscribed"})
        );
    }
}
