"""The WebSocket API as template.yaml defines it, and the shapes API Gateway gives its events.

`WebSocketApi.from_template` reads AWS::ApiGatewayV2::{Api,Route,Integration,Authorizer,
RouteResponse,Stage}. The event builders produce what aws_lambda_events deserializes as
ApiGatewayWebsocketProxyRequest and ApiGatewayCustomAuthorizerRequestTypeRequest, with the client's
header casing kept (API Gateway does not lower-case WebSocket headers).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .functions import FunctionIndex, FunctionSpec
from .template import Resolver, Template, TemplateError


@dataclass
class Authorizer:
    function: FunctionSpec
    identity_sources: list[str]   # e.g. route.request.querystring.token


@dataclass
class Route:
    key: str
    function: FunctionSpec | None
    authorizer: Authorizer | None = None
    two_way: bool = False          # has a route response: the function's body goes back


@dataclass
class WebSocketApi:
    api_id: str
    stage: str
    selection_path: list[str]      # "$request.body.action" -> ["action"]
    routes: dict[str, Route] = field(default_factory=dict)

    @classmethod
    def from_template(cls, template: Template, resolver: Resolver,
                      functions: FunctionIndex) -> WebSocketApi | None:
        apis = [r for r in template.of_type("AWS::ApiGatewayV2::Api")
                if resolver.included(r)
                and str(resolver.resolve(r.properties.get("ProtocolType"))).upper() == "WEBSOCKET"]
        if not apis:
            return None
        if len(apis) > 1:
            raise TemplateError("only one WebSocket API per template is supported locally")
        api_res = apis[0]
        api_id = resolver.refs[api_res.logical_id]
        expression = str(resolver.resolve(api_res.properties.get("RouteSelectionExpression")))
        if not expression.startswith("$request.body."):
            raise TemplateError(f"RouteSelectionExpression {expression}: only $request.body.* is supported")

        def of_api(rtype: str) -> dict[str, dict[str, Any]]:
            out = {}
            for res in template.of_type(rtype):
                if resolver.included(res):
                    props = resolver.resolve(res.properties)
                    if props.get("ApiId") == api_id:
                        out[res.logical_id] = props
            return out

        stages = of_api("AWS::ApiGatewayV2::Stage")
        stage = next((str(p["StageName"]) for p in stages.values()), "prod")
        integrations = {lid: functions.get(str(p.get("IntegrationUri", "")))
                        for lid, p in of_api("AWS::ApiGatewayV2::Integration").items()}
        authorizers = {}
        for lid, props in of_api("AWS::ApiGatewayV2::Authorizer").items():
            fn = functions.get(str(props.get("AuthorizerUri", "")))
            if fn is None:
                raise TemplateError(f"{lid}: AuthorizerUri does not name a function of the template")
            sources = props.get("IdentitySource") or []
            if isinstance(sources, str):
                sources = [s.strip() for s in sources.split(",") if s.strip()]
            authorizers[lid] = Authorizer(fn, list(sources))
        two_way = {str(p.get("RouteId")) for p in of_api("AWS::ApiGatewayV2::RouteResponse").values()}
        api = cls(api_id=api_id, stage=stage, selection_path=expression.split(".")[2:])
        for lid, props in of_api("AWS::ApiGatewayV2::Route").items():
            target = str(props.get("Target") or "")
            integration = target.removeprefix("integrations/") if target else None
            if integration and integration not in integrations:
                raise TemplateError(f"{lid}: Target {target} is not an integration of the API")
            key = str(props["RouteKey"])
            api.routes[key] = Route(
                key=key,
                function=integrations.get(integration) if integration else None,
                authorizer=authorizers.get(str(props.get("AuthorizerId"))),
                two_way=lid in two_way,
            )
        return api

    def select_route(self, body: str | None) -> Route | None:
        """Route selection on the message body; anything unmatched goes to $default."""
        key: Any = None
        if body is not None:
            try:
                key = json.loads(body)
                for part in self.selection_path:
                    key = key.get(part) if isinstance(key, dict) else None
            except ValueError:
                key = None
        if isinstance(key, str) and key in self.routes:
            return self.routes[key]
        return self.routes.get("$default")


# --- request description shared by every event of a connection ---------------------------

@dataclass
class ConnectRequest:
    """What API Gateway saw of the upgrade request (client casing and order preserved)."""
    headers: list[tuple[str, str]]
    query: list[tuple[str, str]]
    source_ip: str
    user_agent: str
    host: str

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        values = [v for k, v in self.headers if k.lower() == lowered]
        return values[-1] if values else None

    def identity_value(self, source: str) -> str | None:
        """Value of an IdentitySource such as route.request.header.Auth / .querystring.token."""
        prefix_header, prefix_query = "route.request.header.", "route.request.querystring."
        if source.startswith(prefix_header):
            return self.header(source[len(prefix_header):])
        if source.startswith(prefix_query):
            values = [v for k, v in self.query if k == source[len(prefix_query):]]
            return values[-1] if values else None
        return None


def _single_and_multi(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        single[key] = value  # REST-style single-value maps keep the last value
        multi.setdefault(key, []).append(value)
    return single, multi


def new_id() -> str:
    """16 characters like API Gateway's connection/request ids (URL-safe alphabet)."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode()


def request_time(epoch_ms: int) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_ms / 1000))


@dataclass
class EventContext:
    """The per-connection part of every requestContext."""
    api: WebSocketApi
    connection_id: str
    connected_at_ms: int
    request: ConnectRequest
    region: str
    account_id: str
    authorizer: dict[str, Any] = field(default_factory=dict)

    def request_context(self, route_key: str, event_type: str, **extra: Any) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        request_id = new_id()
        ctx: dict[str, Any] = {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": request_time(now_ms),
            "messageDirection": "IN",
            "stage": self.api.stage,
            "connectedAt": self.connected_at_ms,
            "requestTimeEpoch": now_ms,
            "identity": {"sourceIp": self.request.source_ip, "userAgent": self.request.user_agent},
            "requestId": request_id,
            "domainName": self.request.host,
            "connectionId": self.connection_id,
            "apiId": self.api.api_id,
        }
        if self.authorizer:
            ctx["authorizer"] = self.authorizer
        ctx.update(extra)
        return ctx

    def method_arn(self, route_key: str) -> str:
        return (f"arn:aws:execute-api:{self.region}:{self.account_id}:"
                f"{self.api.api_id}/{self.api.stage}/{route_key}")

    def authorizer_event(self) -> dict[str, Any]:
        headers, multi_headers = _single_and_multi(self.request.headers)
        query, multi_query = _single_and_multi(self.request.query)
        ctx = self.request_context("$connect", "CONNECT")
        ctx.pop("authorizer", None)
        return {
            "type": "REQUEST",
            "methodArn": self.method_arn("$connect"),
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "stageVariables": {},
            "requestContext": ctx,
        }

    def connect_event(self) -> dict[str, Any]:
        headers, multi_headers = _single_and_multi(self.request.headers)
        event: dict[str, Any] = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "requestContext": self.request_context("$connect", "CONNECT"),
            "isBase64Encoded": False,
        }
        if self.request.query:  # API Gateway leaves both out when there is no query string
            query, multi_query = _single_and_multi(self.request.query)
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = multi_query
        return event

    def message_event(self, route_key: str, body: str, is_base64: bool) -> dict[str, Any]:
        return {
            "requestContext": self.request_context(route_key, "MESSAGE", messageId=new_id()),
            "body": body,
            "isBase64Encoded": is_base64,
        }

    def disconnect_event(self, status_code: int, reason: str) -> dict[str, Any]:
        host = self.request.host
        headers = {"Host": host, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        return {
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "requestContext": self.request_context(
                "$disconnect", "DISCONNECT", disconnectStatusCode=status_code,
                disconnectReason=reason),
            "isBase64Encoded": False,
        }


# --- authorizer responses ---------------------------------------------------------------

class AuthorizerVerdict(Exception):
    """Why the handshake is refused: API Gateway's status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def authorizer_context(response: Any, method_arn: str) -> dict[str, Any]:
    """Evaluate an authorizer's response; the flat `requestContext.authorizer` it grants.

    An explicit Deny matching the method wins, then an Allow must match (403 otherwise).
    Context values must be scalars (API Gateway answers 500 otherwise).
    """
    if not isinstance(response, dict) or not isinstance(response.get("policyDocument"), dict):
        raise AuthorizerVerdict(500, "authorizer response has no policyDocument")
    statements = response["policyDocument"].get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for statement in statements:
        if not _statement_matches(statement, method_arn):
            continue
        if str(statement.get("Effect", "")).lower() == "deny":
            raise AuthorizerVerdict(403, "Forbidden")
        if str(statement.get("Effect", "")).lower() == "allow":
            allowed = True
    if not allowed:
        raise AuthorizerVerdict(403, "Forbidden")
    context = response.get("context") or {}
    if not isinstance(context, dict) or any(isinstance(v, (dict, list)) for v in context.values()):
        raise AuthorizerVerdict(500, "authorizer context values must be strings, numbers or booleans")
    out = dict(context)
    if response.get("principalId") is not None:
        out["principalId"] = response["principalId"]
    return out


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _statement_matches(statement: dict[str, Any], method_arn: str) -> bool:
    actions = _as_list(statement.get("Action"))
    if not any(fnmatch.fnmatchcase("execute-api:Invoke", a) for a in actions):
        return False
    return any(fnmatch.fnmatchcase(method_arn, r) for r in _as_list(statement.get("Resource")))


def response_body(response: bytes) -> tuple[bytes, bool] | None:
    """The frame a route response sends back: the proxy response's `body`, if any.
    Returns (data, is_binary)."""
    try:
        doc = json.loads(response) if response else None
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("body") is None:
        return None
    body = doc["body"]
    if not isinstance(body, str):
        body = json.dumps(body)
    if doc.get("isBase64Encoded"):
        return base64.b64decode(body), True
    return body.encode(), False
