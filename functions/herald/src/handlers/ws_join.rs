//! `join` / `leave`: every join is authorized server-side — the token's `groups` claim, a durable
//! subscription, or the role policy — never the client's word alone. A refused join changes
//! nothing. Answers with `joined` / `left` / `error`, carrying the client's `ref`.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};

use crate::BoxError;
use crate::budget::Budget;
use crate::config::{Env, Limits, Queues, ws_endpoint};
use crate::delivery::Poster;
use crate::frames::{self, ClientFrame, ErrorCode, ErrorFrame};
use crate::gateway::{answer, caller};
use crate::limiter::Limiter;
use crate::membership::{JoinError, Joins};
use crate::policy::{PresencePolicy, RolePolicy};
use crate::presence::Presence;
use crate::queue::Queue;
use crate::runtime::{Handler, InitError};
use crate::store::Store;

pub struct WsJoin {
    joins: Joins,
    limiter: Limiter,
}

impl WsJoin {
    pub fn new(store: Store, limits: Limits, roles: RolePolicy, frames: Option<Budget>, presence: Presence) -> Self {
        Self {
            limiter: Limiter::new(store.clone(), frames),
            joins: Joins::new(store, limits, roles, presence),
        }
    }

    /// Handles a frame routed to `join`/`leave`; other actions get the DESIGN error.
    pub async fn route(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, BoxError> {
        let who = caller(req)?;
        let parsed = frames::parse(req.body.as_deref().unwrap_or_default());
        let reference = match &parsed {
            Ok(f) => f.reference().cloned(),
            Err(e) => e.reference.clone(),
        };
        if let Some(refused) = self
            .limiter
            .admit_frame(Self::NAME, &who.connection_id, req.request_context.request_time_epoch, reference)
            .await?
        {
            return Ok(answer(Some(refused.to_json())));
        }
        let result = match parsed {
            Ok(ClientFrame::Join { group, reference }) => self.joins.join(&who, &group, reference).await,
            Ok(ClientFrame::Leave { group, reference }) => self.joins.leave(&who, &group, reference).await,
            Ok(_) => Err(JoinError::Refused(ErrorFrame::new(
                ErrorCode::UnknownAction,
                "this route takes join and leave",
                None,
            ))),
            Err(e) => Err(JoinError::Refused(e)),
        };
        match result {
            Ok(body) => Ok(answer(Some(body))),
            Err(JoinError::Refused(frame)) => Ok(answer(Some(frame.to_json()))),
            Err(JoinError::Store(e)) => Err(e.into()),
            Err(JoinError::Presence(e)) => Err(e.into()),
        }
    }
}

impl Handler for WsJoin {
    type Event = ApiGatewayWebsocketProxyRequest;
    type Output = ApiGatewayProxyResponse;
    const NAME: &'static str = "ws-join";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let store = Store::from_env(&sdk)?;
        let limits = Limits::from_source(&Env)?;
        let presence = Presence::new(
            Self::NAME,
            store.clone(),
            Queue::new(&sdk, Queues::from_source(&Env)?),
            Poster::new(&sdk, &ws_endpoint(&Env)?)?,
            PresencePolicy::from_source(&Env)?,
            &limits,
        );
        Ok(Self::new(
            store,
            limits,
            RolePolicy::from_source(&Env)?,
            Budget::frames(&Env)?,
            presence,
        ))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.route(&event).await
    }
}
