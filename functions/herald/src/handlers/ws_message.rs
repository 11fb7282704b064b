//! `$default` and `publish`: `resume`, `ack`, `ping`, `publish` (see `publish`), and a clear
//! error frame for anything else. Every frame first spends the connection's frame budget.
//!
//! `resume` replays, from the log, the caller's notifications around and after a cursor the
//! client holds (any cursor Herald handed out: see `replay`) — only from topics the connection
//! is a member of right now (so a group it left, or never could join, is never replayed) — as
//! `replayed` notification frames posted in cursor order, then answers
//! `resumed {cursor,count,more,next,gap}`. `cursor` is a resume point (never past the visibility
//! horizon, see `horizon`); big gaps are paged: `more: true` means "resume again with
//! `page: next`". Ids the client lists in `have` are read past without being posted again.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::{Map, Value, json};

use crate::BoxError;
use crate::domain::budget::Budget;
use crate::domain::config::{Env, Limits, Queues, ws_endpoint};
use crate::domain::frames::{self, ClientFrame, ErrorCode, ErrorFrame};
use crate::domain::groups::Group;
use crate::domain::metrics::Metrics;
use crate::domain::policy::{PresencePolicy, PublishPolicy, RolePolicy};
use crate::io::delivery::{PostOutcome, Poster};
use crate::io::queue::Queue;
use crate::io::store::{Store, epoch_seconds};
use crate::services::broadcast::Broadcaster;
use crate::services::gateway::{Caller, answer, caller};
use crate::services::limiter::Limiter;
use crate::services::membership::{JoinError, Joins};
use crate::services::presence::Presence;
use crate::services::publish::{PublishError, Publisher};
use crate::services::replay::{ReadRequest, Reader, Replay, Start};
use crate::services::runtime::{Handler, InitError};

/// Frames replayed by one `resume`; the client pages beyond it.
pub const RESUME_PAGE: usize = 200;

pub struct WsMessage {
    store: Store,
    poster: Poster,
    limits: Limits,
    joins: Joins,
    limiter: Limiter,
    publisher: Publisher,
    presence: Presence,
    replay: Replay,
}

/// What `ws-message` is built from besides its clients: settings read at init.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub limits: Limits,
    pub roles: RolePolicy,
    pub frames: Option<Budget>,
    /// Posts a user's frames may cause, over all their connections.
    pub work: Option<Budget>,
    pub publish: PublishPolicy,
    pub presence: PresencePolicy,
}

impl WsMessage {
    pub fn new(store: Store, poster: Poster, queue: Queue, settings: Settings) -> Self {
        let Settings {
            limits,
            roles,
            frames,
            work,
            publish,
            presence,
        } = settings;
        let presence = Presence::new("ws-message", store.clone(), queue.clone(), poster.clone(), presence, &limits);
        let limiter = Limiter::new(store.clone(), frames).with_work(work);
        let joins = Joins::new(store.clone(), limits.clone(), roles, presence.clone(), limiter.clone());
        let broadcaster = Broadcaster::new(store.clone(), queue, poster.clone(), limits.clone(), presence.clone());
        Self {
            limiter,
            publisher: Publisher::new(store.clone(), broadcaster, publish, limits.clone()),
            presence,
            replay: Replay::new(store.clone(), limits.retention_seconds),
            store,
            poster,
            limits,
            joins,
        }
    }

    pub async fn route(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, BoxError> {
        let who = caller(req)?;
        let body = req.body.as_deref().unwrap_or_default();
        let admitted = self
            .limiter
            .admit_frame(Self::NAME, &who.connection_id, req.request_context.request_time_epoch, body)
            .await?;
        let frame = match admitted {
            Ok(f) => f,
            Err(refused) => return Ok(answer(Some(refused.to_json()))),
        };
        // Frames that make Herald post or write in bulk (a resume page, a publish, an ack's read
        // marks) are admitted on the user's work budget too, before anything is done: a resume
        // reserves a full page, an ack its ids, a publish one unit, and each is settled at what
        // it cost. A join is charged by `Joins`, which alone knows whether it announces presence.
        let p = &who.principal;
        let reserved = match &frame {
            ClientFrame::Resume { .. } => RESUME_PAGE,
            ClientFrame::Ack { ids, .. } => ids.len(),
            ClientFrame::Publish(_) => 1,
            _ => 0,
        };
        if reserved > 0
            && let Some(ms) = self
                .limiter
                .admit_work(&p.tenant, &p.user, req.request_context.request_time_epoch, reserved)
                .await?
        {
            Metrics::new(Self::NAME).count("WorkLimited", 1).flush();
            return Ok(answer(Some(ErrorFrame::rate_limited(ms, frame.reference().cloned()).to_json())));
        }
        let (body, work) = match frame {
            ClientFrame::Ping { reference } => (frames::reply("pong", Map::new(), reference), 0),
            ClientFrame::Ack { ids, reference } => {
                let expires = epoch_seconds() + self.limits.retention_seconds as i64;
                self.store.read_state.mark_read(&p.tenant, &p.user, &ids, expires).await?;
                let mut m = Map::new();
                m.insert("count".into(), ids.len().into());
                (frames::reply("acked", m, reference), ids.len())
            }
            ClientFrame::Resume {
                since,
                page,
                have,
                reference,
            } => self.resume(&who, since.as_deref(), page.as_deref(), &have, reference).await?,
            // Normally routed to ws-join; handled here too so a `$default`-only deployment works.
            ClientFrame::Join { group, reference } => {
                let joined = self
                    .joins
                    .join(&who, &group, reference, req.request_context.request_time_epoch)
                    .await;
                (flatten(joined)?, 0)
            }
            ClientFrame::Leave { group, reference } => (flatten(self.joins.leave(&who, &group, reference).await)?, 0),
            ClientFrame::Publish(frame) => match self.publisher.publish(Self::NAME, &who, *frame).await {
                Ok(published) => (published.body, published.posts),
                Err(PublishError::Store(e)) => return Err(e.into()),
                Err(PublishError::Broadcast(e)) => return Err(e.into()),
            },
        };
        // Settled only when the cost differs from the reservation: one write less for most frames.
        if reserved > 0 && work != reserved {
            self.limiter.settle_work(&p.tenant, &p.user, reserved, work).await?;
        }
        Ok(answer(Some(body)))
    }

    async fn resume(
        &self,
        who: &Caller,
        since: Option<&str>,
        page: Option<&str>,
        have: &[String],
        reference: Option<Value>,
    ) -> Result<(String, usize), BoxError> {
        let start = match Start::parse(since, page) {
            Ok(s) => s,
            Err(e) => return Ok((ErrorFrame::new(ErrorCode::BadRequest, e.to_string(), reference).to_json(), 0)),
        };
        let p = &who.principal;
        // The connection's memberships are the entitlement record: joins were authorized when
        // they happened, and a group the caller left is no longer among them.
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
                have,
                visible_since: memberships
                    .groups
                    .iter()
                    .filter_map(|m| m.visible_since.map(|at| (m.group.clone(), at)))
                    .collect(),
            })
            .await?;
        let mut sent = 0;
        for entry in &read.entries {
            match self.poster.post(&who.connection_id, &entry.frame(true)).await {
                PostOutcome::Delivered => sent += 1,
                PostOutcome::Gone => {
                    // A socket still open after a 410 would go on receiving live frames newer
                    // than the entries not replayed: closed, so its client resumes again.
                    self.close(&who.connection_id).await;
                    let closed = self.store.connections.close(&who.connection_id).await?;
                    self.presence.closed(&[closed]).await?;
                    return Ok((String::new(), sent));
                }
                // The client would go on receiving live frames newer than this entry, and a
                // cursor of theirs would then be past it for good: closed instead, so the client
                // reconnects and resumes from a cursor that still has it ahead (see `horizon`).
                PostOutcome::Retryable(reason) | PostOutcome::Failed(reason) => {
                    tracing::warn!(connection = %who.connection_id, %reason, "a replayed frame could not be posted; closing the connection");
                    self.close(&who.connection_id).await;
                    return Ok((String::new(), sent));
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
            sent,
        ))
    }

    async fn close(&self, connection_id: &str) {
        let closed = self.poster.disconnect(connection_id).await;
        if !matches!(closed, PostOutcome::Delivered | PostOutcome::Gone) {
            tracing::warn!(connection = %connection_id, outcome = ?closed, "could not close the connection");
        }
    }
}

fn flatten(r: Result<String, JoinError>) -> Result<String, BoxError> {
    match r {
        Ok(s) => Ok(s),
        Err(JoinError::Refused(frame)) => Ok(frame.to_json()),
        Err(JoinError::Store(e)) => Err(e.into()),
        Err(JoinError::Presence(e)) => Err(e.into()),
    }
}

impl Handler for WsMessage {
    type Event = ApiGatewayWebsocketProxyRequest;
    type Output = ApiGatewayProxyResponse;
    const NAME: &'static str = "ws-message";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let store = Store::from_env(&sdk)?;
        let poster = Poster::new(&sdk, &ws_endpoint(&Env)?)?;
        let queue = Queue::new(&sdk, Queues::from_source(&Env)?);
        let settings = Settings {
            limits: Limits::from_source(&Env)?,
            roles: RolePolicy::from_source(&Env)?,
            frames: Budget::frames(&Env)?,
            work: Budget::work(&Env)?,
            publish: PublishPolicy::from_source(&Env)?,
            presence: PresencePolicy::from_source(&Env)?,
        };
        tracing::info!(publish = ?settings.publish.kinds(), presence = ?settings.presence.kinds(), "group kinds with publish and presence");
        Ok(Self::new(store, poster, queue, settings))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.route(&event).await
    }
}
