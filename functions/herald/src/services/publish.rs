//! Client publish (DESIGN.md, "Interactive features"): a connection sends a message to a group
//! it is a member of — a chat message, a typing indicator, a location ping.
//!
//! Checked server-side on every frame: the group kind's publish policy (`policy`), then the
//! connection's membership *now* (its memberships are the entitlement record: joins were
//! authorized when they happened, and a group left is no longer among them). The tenant is the
//! token's, so a group of another tenant cannot even be named. `from` is the token's user.
//!
//! - **Logged** (the default): the lifecycle of a producer notification (`lifecycle`) — claimed
//!   by id (the publisher's own namespace, `~{user}~{id}`, so a client retry is a duplicate and
//!   a client can never collide with a producer's id), logged before any push, retried, replayed.
//! - **Ephemeral**: never stored and never retried; posted straight from this invocation to the
//!   group's live connections (no queue hop unless the group needs fan-out jobs).
//!
//! The publisher's own connection is left out unless it asks for `echo`.

use serde_json::{Map, Value, json};

use crate::domain::config::Limits;
use crate::domain::cursor::Cursor;
use crate::domain::frames::{self, ErrorCode, ErrorFrame, PublishFrame};
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::notification::{Content, LogEntry, Sender, ephemeral_frame, now_rfc3339, user_scoped_id};
use crate::domain::policy::PublishPolicy;
use crate::io::store::{Store, StoreError, epoch_seconds};
use crate::services::broadcast::{BroadcastError, Outgoing, Reach};
use crate::services::gateway::Caller;
use crate::services::lifecycle::{Lifecycle, LifecycleError, Send, Sent};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// A publish's answer frame, and the posts it caused (charged to the user's work budget).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub body: String,
    pub posts: usize,
}

#[derive(Clone, Debug)]
pub struct Publisher {
    store: Store,
    lifecycle: Lifecycle,
    policy: PublishPolicy,
    limits: Limits,
}

impl Publisher {
    pub fn new(store: Store, lifecycle: Lifecycle, policy: PublishPolicy, limits: Limits) -> Self {
        Self {
            store,
            lifecycle,
            policy,
            limits,
        }
    }

    /// Publishes `frame` for `who`; the answer frame (`published` or `error`) as JSON text.
    pub async fn publish(&self, function: &'static str, who: &Caller, frame: PublishFrame) -> Result<Published, PublishError> {
        let reference = frame.reference.clone();
        let refuse = |code, msg: String| Published {
            body: ErrorFrame::new(code, msg, reference.clone()).to_json(),
            posts: 0,
        };
        let group = match Group::parse(&frame.group) {
            Ok(g) => g,
            Err(e) => return Ok(refuse(ErrorCode::BadRequest, e.to_string())),
        };
        let p = &who.principal;
        let kind = kind_of(&group);
        if !self.policy.allows(p, &group) {
            Metrics::new(function)
                .with_dimension("Kind", kind.clone())
                .count("PublishDenied", 1)
                .flush();
            tracing::info!(connection = %who.connection_id, user = %p.user, %group, "publish denied by policy");
            return Ok(refuse(ErrorCode::Forbidden, format!("publishing to {kind} groups is not allowed")));
        }
        let name = group.to_string();
        let memberships = self.store.connections.memberships_of(&who.connection_id).await?;
        let member = memberships.as_ref().is_some_and(|ms| ms.groups.iter().any(|m| m.group == name));
        // `published.cursor` is a resume point like a live frame's: only once caught up.
        let caught_up = memberships.is_some_and(|ms| ms.caught_up);
        if !member {
            Metrics::new(function)
                .with_dimension("Kind", kind.clone())
                .count("PublishDenied", 1)
                .flush();
            tracing::info!(connection = %who.connection_id, user = %p.user, %group, "publish denied: not a member");
            return Ok(refuse(ErrorCode::Forbidden, format!("not a member of {group}; join it first")));
        }
        let content = Content {
            event: frame.event,
            title: frame.title,
            body: frame.body,
            link: None,
            data: frame.data,
            // In the publisher's own namespace, as its id: a member's key must never replace a
            // producer's latest value (or another member's) in the log, in a read page or on a
            // retry. Producers' keys cannot start with `~`.
            collapse: frame.collapse.map(|key| user_scoped_id(&p.user, &key)),
            from: Some(Sender { user: p.user.clone() }),
            ..Content::default()
        };
        let id = user_scoped_id(&p.user, frame.id.as_deref().unwrap_or(&Cursor::now().to_string()));
        let created_at = now_rfc3339();
        // The largest frame it can become (a logged one carries a cursor), against the budget.
        let probe = LogEntry {
            id: id.clone(),
            cursor: Cursor::MIN,
            topic: name.clone(),
            content: content.clone(),
            created_at: created_at.clone(),
        };
        let size = probe.frame(true).len();
        if size > self.limits.payload_budget {
            return Ok(refuse(
                ErrorCode::TooLarge,
                format!("the frame would be {size} bytes; the budget is {}", self.limits.payload_budget),
            ));
        }
        let reach = Reach {
            exclude: (!frame.echo).then_some(who.connection_id.as_str()),
            ephemeral: frame.ephemeral,
        };
        let mut reply = Map::new();
        if frame.ephemeral {
            let text = ephemeral_frame(&id, &name, &content, &created_at);
            let out = Outgoing {
                topic: group,
                frame: text,
                collapse: None,
            };
            let summary = self.lifecycle.broadcaster().fan_out(&p.tenant, &id, &[out], reach).await?;
            Metrics::new(function)
                .with_dimension("Kind", kind.clone())
                .count("PublishedEphemeral", 1)
                .count("Delivered", summary.delivered)
                .flush();
            return Ok(Published {
                body: frames::reply("published", reply, reference),
                posts: summary.posts(),
            });
        }
        let expires = epoch_seconds() + self.limits.retention_seconds as i64;
        let mut posts = 0;
        let send = Send {
            tenant: &p.tenant,
            id: &id,
            topics: vec![group],
            content: &content,
            expires,
            reach,
            escalate_after: None,
            push: None,
        };
        let cursor = match self.lifecycle.send(send).await {
            Ok(Sent::Duplicate(cursor)) => cursor,
            Ok(Sent::Delivered { cursor, summary, .. }) => {
                posts = summary.posts();
                Metrics::new(function)
                    .with_dimension("Kind", kind.clone())
                    .count("Published", 1)
                    .count("Delivered", summary.delivered)
                    .count("Retried", summary.retried)
                    .count("Closed", summary.closed)
                    .flush();
                cursor.unwrap_or(Cursor::MIN)
            }
            Err(e) if e.lease_left_ms().is_some() => {
                return Ok(refuse(
                    ErrorCode::Internal,
                    "a publish with this id is still in progress; send it again shortly".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        reply.insert("id".into(), json!(id));
        if caught_up {
            reply.insert("cursor".into(), Value::String(cursor.to_string()));
        }
        Ok(Published {
            body: frames::reply("published", reply, reference),
            posts,
        })
    }
}

/// The metric dimension and policy name of a group's kind.
fn kind_of(group: &Group) -> String {
    match group {
        Group::User(_) => "user".into(),
        Group::Tenant => "tenant".into(),
        Group::All => "all".into(),
        Group::Named { kind, .. } => kind.clone(),
    }
}
