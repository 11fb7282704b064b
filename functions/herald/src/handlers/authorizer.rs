//! `$connect` REQUEST authorizer: a valid token → Allow with the caller in the context;
//! anything else → `Unauthorized` (HTTP 401 at the handshake). Never logs a token.

use aws_config::SdkConfig;
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use serde_json::{Value, json};

use crate::BoxError;
use crate::domain::auth::{JwtConfig, Verifier, handshake_token};
use crate::domain::config::Env;
use crate::domain::metrics::Metrics;
use crate::services::gateway::authorizer_context;
use crate::services::runtime::{Handler, InitError};

/// The error message API Gateway turns into a 401.
#[derive(Debug, thiserror::Error)]
#[error("Unauthorized")]
pub struct Unauthorized;

pub struct Authorizer {
    verifier: Verifier,
}

impl Authorizer {
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }

    pub async fn authorize(&self, req: &ApiGatewayCustomAuthorizerRequestTypeRequest) -> Result<Value, Unauthorized> {
        let query = req.query_string_parameters.first("token");
        let protocol = req.headers.get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
        let Some(found) = handshake_token(query, protocol) else {
            tracing::info!(reason = "no token", "connection refused");
            Metrics::new("authorizer")
                .with_dimension("Reason", "missing")
                .count("Refused", 1)
                .flush();
            return Err(Unauthorized);
        };
        let principal = self.verifier.verify_refreshing(&found.token).await.map_err(|e| {
            tracing::info!(reason = %e, "connection refused");
            Metrics::new("authorizer")
                .with_dimension("Reason", format!("{e:?}").split('(').next().unwrap_or("invalid").to_owned())
                .count("Refused", 1)
                .flush();
            Unauthorized
        })?;
        let resource = req.method_arn.clone().unwrap_or_else(|| "*".into());
        Ok(json!({
            "principalId": principal.user,
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}]
            },
            "context": authorizer_context(&principal, req.query_string_parameters.first("batch").is_some_and(|b| b == "1")),
        }))
    }
}

impl Handler for Authorizer {
    type Event = ApiGatewayCustomAuthorizerRequestTypeRequest;
    type Output = Value;
    const NAME: &'static str = "authorizer";

    // Tokens are verified with keys from the environment (or the JWKS URL, over its own
    // client): no AWS API is called, so the SDK configuration is not loaded.
    const USES_AWS: bool = false;

    async fn init(_sdk: SdkConfig) -> Result<Self, InitError> {
        let cfg = JwtConfig::from_source(&Env)?;
        Ok(Self::new(Verifier::load(cfg).await?))
    }

    async fn handle(&self, event: Self::Event) -> Result<Value, BoxError> {
        Ok(self.authorize(&event).await?)
    }
}
