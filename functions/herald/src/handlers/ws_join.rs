//! `join` / `leave`: every join is authorized server-side — the token's `groups` claim, a durable
//! subscription, or the role policy — never the client's word alone. A refused join changes
//! nothing. Answers with `joined` / `left` / `error`, carrying the client's `ref`.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};

use crate::BoxError;
use crate::domain::budget::Budget;
use crate::domain::config::{Env, Limits};
use crate::domain::frames::{ClientFrame, ErrorCode, ErrorFrame};
use crate::domain::policy::RolePolicy;
use crate::io::store::Store;
use crate::services::deps::Deps;
use crate::services::gateway::{answer, caller};
use crate::services::limiter::Limiter;
use crate::services::membership::{JoinError, Joins};
use crate::services::presence::Presence;
use crate::services::runtime::{Handler, InitError};

/// A connection's frame budget and its user's work budget (`None`: not limited).
pub struct Budgets {
    pub frames: Option<Budget>,
    pub work: Option<Budget>,
}

pub struct WsJoin {
    joins: Joins,
    limiter: Limiter,
}

impl WsJoin {
    pub fn new(store: Store, limits: Limits, roles: RolePolicy, budgets: Budgets, presence: Presence) -> Self {
        let limiter = Limiter::new(store.clone(), budgets.frames).with_work(budgets.work);
        Self {
            joins: Joins::new(store, limits, roles, presence, limiter.clone()),
            limiter,
        }
    }

    /// Handles a frame routed to `join`/`leave`; other actions get the DESIGN error.
    pub async fn route(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, BoxError> {
        let who = caller(req)?;
        let body = req.body.as_deref().unwrap_or_default();
        let admitted = self
            .limiter
            .admit_frame(Self::NAME, &who.connection_id, req.request_context.request_time_epoch, body)
            .await?;
        let result = match admitted {
            Ok(ClientFrame::Join { group, reference }) => {
                self.joins
                    .join(&who, &group, reference, req.request_context.request_time_epoch)
                    .await
            }
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
        let d = Deps::new(sdk);
        let presence = d.presence(Self::NAME)?;
        Ok(Self::new(
            d.store()?,
            d.limits()?,
            d.roles()?,
            Budgets {
                frames: Budget::frames(&Env)?,
                work: Budget::work(&Env)?,
            },
            presence,
        ))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.route(&event).await
    }
}
