//! `$default` and `publish`: `resume`, `ack`, `ping`, `publish` (see `publish`), and a clear
//! error frame for anything else. Every frame first spends the connection's frame budget.
//!
//! `read` is a chat read receipt (`services::chat::Receipts`), which admits itself on the
//! user's work budget as a join does.
//!
//! Frames that make Herald post or write in bulk are admitted on the user's work budget too
//! (`limiter`). `resume` is the replay service's (`replay::resume`): the caller's notifications
//! around and after a cursor the client holds, from the topics the connection is a member of,
//! posted as `replayed` frames, then `resumed {cursor,count,more,next,gap}`.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::Map;

use crate::BoxError;
use crate::domain::budget::Budget;
use crate::domain::config::Env;
use crate::domain::frames::{self, ClientFrame};
use crate::domain::policy::PublishPolicy;
use crate::services::broadcast::Broadcaster;
use crate::services::chat::Receipts;
use crate::services::deps::Deps;
use crate::services::gateway::{answer, caller};
use crate::services::inbox::ReadSync;
use crate::services::lifecycle::Lifecycle;
use crate::services::limiter::Limiter;
use crate::services::membership::Joins;
use crate::services::publish::Publisher;
use crate::services::replay::{Replay, ResumeFrom, Resumer};
use crate::services::runtime::{Handler, InitError};

pub struct WsMessage {
    joins: Joins,
    limiter: Limiter,
    publisher: Publisher,
    read_sync: ReadSync,
    resumer: Resumer,
    receipts: Receipts,
}

impl WsMessage {
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
        let p = &who.principal;
        let at = req.request_context.request_time_epoch;
        let reserved = match self.limiter.admit_frame_work(Self::NAME, &p.tenant, &p.user, at, &frame).await? {
            Ok(reserved) => reserved,
            Err(refused) => return Ok(answer(Some(refused.to_json()))),
        };
        let (body, work) = match frame {
            ClientFrame::Ping { reference } => (frames::reply("pong", Map::new(), reference), 0),
            // The user's other connections get `read` with the new count (`inbox`).
            ClientFrame::Ack { ids, reference } => self.read_sync.ack(p, &ids, &who.connection_id, reference).await?,
            ClientFrame::Resume {
                since,
                page,
                have,
                reference,
            } => {
                let from = ResumeFrom {
                    since: since.as_deref(),
                    page: page.as_deref(),
                    have: &have,
                };
                self.resumer.resume(&who, from, at, reference).await?
            }
            // Normally routed to ws-join; handled here too so a `$default`-only deployment works.
            ClientFrame::Join { group, reference } => {
                let joined = self.joins.join(&who, &group, reference, at).await;
                (joined.or_else(|e| e.refusal().map(|f| f.to_json()))?, 0)
            }
            ClientFrame::Leave { group, reference } => {
                let left = self.joins.leave(&who, &group, reference).await;
                (left.or_else(|e| e.refusal().map(|f| f.to_json()))?, 0)
            }
            ClientFrame::Read { group, up_to, reference } => match self.receipts.mark(p, &group, &up_to, at).await {
                Ok(marked) => (marked.frame(reference), 0),
                Err(e) => (e.refusal(reference).map_err(BoxError::from)?.to_json(), 0),
            },
            ClientFrame::Publish(frame) => {
                let published = self.publisher.publish(Self::NAME, &who, *frame).await?;
                (published.body, published.posts)
            }
        };
        self.limiter.settle_frame(&p.tenant, &p.user, reserved, work).await?;
        Ok(answer(Some(body)))
    }
}

impl Handler for WsMessage {
    type Event = ApiGatewayWebsocketProxyRequest;
    type Output = ApiGatewayProxyResponse;
    const NAME: &'static str = "ws-message";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        let (store, limits, publish) = (d.store()?, d.limits()?, PublishPolicy::from_source(&Env)?);
        tracing::info!(publish = ?publish.kinds(), presence = ?d.presence_policy()?.kinds(), "group kinds with publish and presence");
        let presence = d.presence(Self::NAME)?;
        let limiter = Limiter::new(store.clone(), Budget::frames(&Env)?).with_work(Budget::work(&Env)?);
        let broadcaster = Broadcaster::new(store.clone(), d.queue()?, d.poster()?, limits.clone(), presence.clone());
        let replay = Replay::new(store.clone(), limits.retention_seconds);
        Ok(Self {
            joins: Joins::new(store.clone(), limits.clone(), d.roles()?, presence.clone(), limiter.clone()),
            publisher: Publisher::new(store.clone(), Lifecycle::new(broadcaster), publish, limits.clone()),
            read_sync: d.read_sync()?,
            resumer: Resumer::new(replay, store, d.poster()?, presence, limiter.clone()),
            limiter,
            receipts: d.receipts(Self::NAME)?,
        })
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.route(&event).await
    }
}
