//! `resume` over a connection: the log's entries the client lacks, posted in cursor order as
//! `replayed` frames (packed into batch frames of up to 32 KB for a connection that opted in:
//! a page of 200 small entries is a few billed messages instead of 200), then the `resumed`
//! answer. The page is charged on the user's work budget once read, at the posts it needs,
//! before any is made (`Limiter::charge_work`). Only topics the connection is a member of right
//! now are read (its memberships are the entitlement record: joins were authorized when they
//! happened, and a group left is no longer among them). A connection that cannot take a replayed
//! frame is closed rather than left behind, so its client resumes again from the point it held.

use serde_json::{Value, json};

use super::{ReadRequest, Reader, Replay, Start};
use crate::domain::frames::{self, ErrorCode, ErrorFrame, MESSAGE_UNIT};
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::io::delivery::{PostOutcome, Poster};
use crate::io::store::{Store, StoreError};
use crate::services::gateway::Caller;
use crate::services::limiter::Limiter;
use crate::services::presence::{Presence, PresenceError};

/// Frames replayed by one `resume`; the client pages beyond it.
pub const RESUME_PAGE: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// What a `resume` frame asked for.
#[derive(Debug, Clone, Copy)]
pub struct ResumeFrom<'a> {
    pub since: Option<&'a str>,
    pub page: Option<&'a str>,
    /// Ids the client holds: read past, not posted again.
    pub have: &'a [String],
}

#[derive(Clone, Debug)]
pub struct Resumer {
    replay: Replay,
    store: Store,
    poster: Poster,
    presence: Presence,
    limiter: Limiter,
}

impl Resumer {
    pub fn new(replay: Replay, store: Store, poster: Poster, presence: Presence, limiter: Limiter) -> Self {
        Self {
            replay,
            store,
            poster,
            presence,
            limiter,
        }
    }

    /// Replays one page to `who`'s connection, for a frame API Gateway received at
    /// `received_ms`. Returns the answer frame (empty when the connection was closed instead)
    /// and the messages posted.
    pub async fn resume(
        &self,
        who: &Caller,
        from: ResumeFrom<'_>,
        received_ms: i64,
        reference: Option<Value>,
    ) -> Result<(String, usize), ResumeError> {
        let start = match Start::parse(from.since, from.page) {
            Ok(s) => s,
            Err(e) => return Ok((ErrorFrame::new(ErrorCode::BadRequest, e.to_string(), reference).to_json(), 0)),
        };
        let p = &who.principal;
        let Some(memberships) = self.store.connections.memberships_of(&who.connection_id).await? else {
            // The connection's item is gone while its socket is open (a 410 taken as gone, its
            // TTL): it gets nothing live, and a resume would read no groups and hand back a
            // position as if nothing were missed. Closed instead, so the client connects again
            // (new item, memberships) and resumes from the point it holds.
            tracing::warn!(connection = %who.connection_id, "resume on a connection without its item; closing it");
            self.close(&who.connection_id).await;
            let gone = ErrorFrame::new(ErrorCode::Internal, "this connection is no longer registered; reconnect", reference);
            return Ok((gone.to_json(), 0));
        };
        let topics: Vec<Group> = memberships.groups.iter().filter_map(|m| Group::parse(&m.group).ok()).collect();
        let read = self
            .replay
            .read(ReadRequest {
                tenant: &p.tenant,
                user: &p.user,
                topics: &topics,
                start,
                reader: Reader::connection(&who.connection_id),
                limit: RESUME_PAGE,
                have: from.have,
                visible_since: memberships
                    .groups
                    .iter()
                    .filter_map(|m| m.visible_since.map(|at| (m.group.clone(), at)))
                    .collect(),
                connection: &who.connection_id,
            })
            .await?;
        let frames: Vec<String> = read.entries.iter().map(|e| read.frame(e, true)).collect();
        let messages = if memberships.batch {
            frames::batch(&frames, MESSAGE_UNIT)
        } else {
            frames.into_iter().map(|f| (f, 1)).collect()
        };
        let charged = self
            .limiter
            .charge_work("ws-message", &p.tenant, &p.user, received_ms, messages.len(), reference.clone())
            .await?;
        if let Err(refused) = charged {
            return Ok((refused.to_json(), 0));
        }
        let (mut sent, mut posts) = (0, 0);
        for (message, carries) in &messages {
            posts += 1;
            let outcome = self.poster.post(&who.connection_id, message).await;
            if !matches!(outcome, PostOutcome::Delivered) {
                // The rest is never posted: handed back to the budget.
                self.limiter.settle_work(&p.tenant, &p.user, messages.len(), posts).await?;
            }
            match outcome {
                PostOutcome::Delivered => sent += carries,
                PostOutcome::Gone => {
                    // A socket still open after a 410 would go on receiving live frames newer
                    // than the entries not replayed: closed, so its client resumes again.
                    self.close(&who.connection_id).await;
                    let closed = self.store.connections.close(&who.connection_id).await?;
                    self.presence.closed(&[closed]).await?;
                    return Ok((String::new(), posts));
                }
                // The client would go on receiving live frames newer than this entry, and a
                // cursor of theirs would then be past it for good: closed instead, so the client
                // reconnects and resumes from a cursor that still has it ahead (see `horizon`).
                PostOutcome::Retryable(reason) | PostOutcome::Failed(reason) => {
                    tracing::warn!(connection = %who.connection_id, %reason, "a replayed frame could not be posted; closing the connection");
                    self.close(&who.connection_id).await;
                    return Ok((String::new(), posts));
                }
            }
        }
        // The connection's first complete resume: it has every entry up to now, so the live
        // frames posted to it from here on carry their cursor (see `horizon`).
        if !read.more && !memberships.caught_up {
            self.store.connections.mark_caught_up(&who.connection_id).await?;
        }
        Metrics::new("ws-message")
            .count("Resumes", 1)
            .count("Replayed", sent)
            .count("ReplayMessages", posts)
            .count("Spared", read.spared)
            .flush();
        let answer = read.answer;
        let mut m = json!({"cursor": answer.cursor.to_string(), "count": sent, "more": read.more});
        if let Some(next) = answer.next {
            m["next"] = json!(next);
        }
        if answer.gap {
            m["gap"] = json!(true);
        }
        Ok((
            frames::reply("resumed", m.as_object().cloned().unwrap_or_default(), reference),
            posts,
        ))
    }

    async fn close(&self, connection_id: &str) {
        let closed = self.poster.disconnect(connection_id).await;
        if !matches!(closed, PostOutcome::Delivered | PostOutcome::Gone) {
            tracing::warn!(connection = %connection_id, outcome = ?closed, "could not close the connection");
        }
    }
}
