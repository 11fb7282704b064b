//! API Gateway WebSocket events: what every WebSocket route shares. Who is calling (from the
//! authorizer context API Gateway attaches to every event of the connection) and how to answer.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use serde_json::Value;

use crate::domain::auth::Principal;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsEventError {
    #[error("event has no connectionId")]
    NoConnection,
    #[error("event has no authorizer context `{0}`")]
    NoContext(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub connection_id: String,
    pub principal: Principal,
    /// The connection opted in to batch frames (`?batch=1` at the handshake).
    pub batch: bool,
}

fn field(ctx: &std::collections::HashMap<String, Value>, name: &'static str) -> Result<String, WsEventError> {
    match ctx.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(WsEventError::NoContext(name)),
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

pub fn caller(req: &ApiGatewayWebsocketProxyRequest) -> Result<Caller, WsEventError> {
    let rc = &req.request_context;
    let connection_id = rc
        .connection_id
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or(WsEventError::NoConnection)?;
    let ctx = &rc.authorizer.fields;
    Ok(Caller {
        connection_id,
        principal: Principal {
            user: field(ctx, "user")?,
            tenant: field(ctx, "tenant")?,
            roles: split_list(&field(ctx, "roles").unwrap_or_default()),
            groups: split_list(&field(ctx, "groups").unwrap_or_default()),
        },
        batch: field(ctx, "batch").is_ok_and(|b| b == "1"),
    })
}

/// The context the authorizer returns; API Gateway only carries scalar values, hence the joins.
/// It comes with every event of the connection, so `batch` (the handshake's opt-in to batch
/// frames) reaches `join`, which writes it on the membership rows fan-outs read.
pub fn authorizer_context(p: &Principal, batch: bool) -> Value {
    let mut context = serde_json::json!({
        "user": p.user,
        "tenant": p.tenant,
        "roles": p.roles.join(","),
        "groups": p.groups.join(","),
    });
    if batch {
        context["batch"] = Value::from("1");
    }
    context
}

/// A 200 whose body (if any) the route response sends back to the caller.
pub fn answer(body: Option<String>) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = 200;
    r.body = body.map(Body::Text);
    r
}

pub fn status(code: i64) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_caller_from_authorizer_context() {
        let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(serde_json::json!({
            "requestContext": {"connectionId": "c1", "connectedAt": 1, "requestTimeEpoch": 1,
                "authorizer": {"principalId": "u1", "user": "u1", "tenant": "acme", "roles": "a,b", "groups": ""}}
        }))
        .unwrap();
        let c = caller(&event).unwrap();
        assert_eq!(c.connection_id, "c1");
        assert_eq!(c.principal.roles, vec!["a", "b"]);
        assert!(c.principal.groups.is_empty());
        assert!(!c.batch, "no opt-in without the context's flag");
        let event: ApiGatewayWebsocketProxyRequest =
            serde_json::from_value(serde_json::json!({"requestContext": {"connectionId": "c1", "connectedAt": 1, "requestTimeEpoch": 1}}))
                .unwrap();
        assert_eq!(caller(&event), Err(WsEventError::NoContext("user")));
    }
}
