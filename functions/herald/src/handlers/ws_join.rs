//! `join` / `leave`: every join is authorized server-side — the token's `groups` claim, a durable
//! subscription, or the role policy — never the client's word alone. A refused join changes
//! nothing. Answers with `joined` / `left` / `error`, carrying the client's `ref`.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};

use crate::BoxError;
use crate::domain::budget::Budget;
use crate::domain::config::Env;
use crate::domain::frames::{ClientFrame, ErrorCode, ErrorFrame};
use crate::services::deps::Deps;
use crate::services::gateway::{answer, caller};
use crate::services::limiter::Limiter;
use crate::services::membership::{JoinError, Joins};
use crate::services::runtime::{Handler, InitError};

pub struct WsJoin {
    joins: Joins,
    limiter: Limiter,
}

impl WsJoin {
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
        let body = result.or_else(|e| e.refusal().map(|f| f.to_json()))?;
        Ok(answer(Some(body)))
    }
}

impl Handler for WsJoin {
    type Event = ApiGatewayWebsocketProxyRequest;
    type Output = ApiGatewayProxyResponse;
    const NAME: &'static str = "ws-join";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let d = Deps::new(sdk);
        let store = d.store()?;
        let limiter = Limiter::new(store.clone(), Budget::frames(&Env)?).with_work(Budget::work(&Env)?);
        Ok(Self {
            joins: Joins::new(store, d.limits()?, d.roles()?, d.presence(Self::NAME)?, limiter.clone()),
            limiter,
        })
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.route(&event).await
    }
}
