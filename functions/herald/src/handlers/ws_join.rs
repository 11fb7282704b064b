//! `join` / `leave`: every join is authorized server-side — the token's `groups` claim, a durable
//! subscription, or the role policy — never the client's word alone. A refused join changes
//! nothing. Answers with `joined` / `left` / `error`, carrying the client's `ref`.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::{Map, Value};

use super::ws::{Caller, answer, caller};
use crate::BoxError;
use crate::config::{Env, Limits};
use crate::frames::{self, ClientFrame, ErrorCode, ErrorFrame};
use crate::groups::Group;
use crate::metrics::Metrics;
use crate::policy::{Entitlement, RolePolicy, entitlement};
use crate::runtime::{Handler, InitError};
use crate::store::{ConnectionRecord, Store, StoreError};

pub struct WsJoin {
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

impl WsJoin {
    pub fn new(store: Store, limits: Limits, roles: RolePolicy) -> Self {
        Self { store, limits, roles }
    }

    /// May this caller receive `group`? Shared by `join`, `resume` and the HTTP API.
    pub async fn entitled(
        store: &Store,
        roles: &RolePolicy,
        principal: &crate::auth::Principal,
        group: &Group,
    ) -> Result<bool, StoreError> {
        Ok(match entitlement(principal, group, roles) {
            Entitlement::Implicit | Entitlement::Token => true,
            Entitlement::Denied => false,
            Entitlement::NeedsSubscription => store.subscriptions.exists(&principal.tenant, &principal.user, group).await?,
        })
    }

    pub async fn join(&self, who: &Caller, name: &str, reference: Option<Value>) -> Result<String, JoinError> {
        let refuse = |code, msg: String| JoinError::Refused(ErrorFrame::new(code, msg, reference.clone()));
        let group = Group::parse(name).map_err(|e| refuse(ErrorCode::BadRequest, e.to_string()))?;
        if !Self::entitled(&self.store, &self.roles, &who.principal, &group).await? {
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

    /// Handles a frame routed to `join`/`leave`; other actions get the DESIGN error.
    pub async fn route(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, BoxError> {
        let who = caller(req)?;
        let result = match frames::parse(req.body.as_deref().unwrap_or_default()) {
            Ok(ClientFrame::Join { group, reference }) => self.join(&who, &group, reference).await,
            Ok(ClientFrame::Leave { group, reference }) => self.leave(&who, &group, reference).await,
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
        }
    }
}

fn group_field(group: &Group) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("group".into(), group.to_string().into());
    m
}

impl Handler for WsJoin {
    type Event = ApiGatewayWebsocketProxyRequest;
    type Output = ApiGatewayProxyResponse;
    const NAME: &'static str = "ws-join";

    async fn init(sdk: SdkConfig) -> Result<Self, InitError> {
        let store = Store::from_env(&sdk)?;
        Ok(Self::new(store, Limits::from_source(&Env)?, RolePolicy::from_source(&Env)?))
    }

    async fn handle(&self, event: Self::Event) -> Result<Self::Output, BoxError> {
        self.route(&event).await
    }
}
