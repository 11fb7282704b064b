"""The HTTP API: `Type: HttpApi` events of the functions, payload format 2.0.

Events follow ApiGatewayV2httpRequest (header names lower-cased, repeated headers and query
parameters joined with commas, cookies split out); responses are mapped back as API Gateway does,
including its inference for a function that returns plain JSON without a statusCode.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .cost import Meter
from .functions import FunctionSpec
from .runtime import FunctionError, FunctionPool
from .template import Resolver, Template, TemplateError
from .wsapi import new_id, request_time

log = logging.getLogger("herald_local")

INTEGRATION_TIMEOUT_S = 30.0   # HTTP API's maximum integration timeout
MAX_BODY_BYTES = 10 * 1024 * 1024
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded", "+json", "+xml")


@dataclass
class HttpRoute:
    method: str               # GET, POST, ... or ANY
    path: str                 # /notifications/{id}, /{proxy+}, or $default
    function: FunctionSpec

    @property
    def key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> tuple[tuple[int, int, int], dict[str, str]] | None:
        """(specificity rank, path parameters) when this route takes the request."""
        if self.method not in ("ANY", method):
            return None
        any_method = int(self.method == "ANY")
        if self.path == "$default":
            return (3, 0, any_method), {}
        want = self.path.strip("/").split("/")
        have = path.strip("/").split("/")
        params: dict[str, str] = {}
        literals = 0
        for i, segment in enumerate(want):
            if segment.startswith("{") and segment.endswith("+}"):
                rest = have[i:]
                if not rest or rest == [""]:
                    return None
                params[segment[1:-2]] = "/".join(rest)
                return (2, -literals, any_method), params
            if i >= len(have):
                return None
            if segment.startswith("{") and segment.endswith("}"):
                if not have[i]:
                    return None
                params[segment[1:-1]] = have[i]
            elif segment != have[i]:
                return None
            else:
                literals += 1
        if len(have) != len(want):
            return None
        return (0 if not params else 1, -literals, any_method), params


@dataclass
class Cors:
    """An HttpApi's CorsConfiguration: API Gateway answers preflights itself and adds the
    headers to every response of an allowed origin."""
    origins: list[str]
    methods: list[str]
    headers: list[str]
    expose: list[str]
    max_age: int | None
    credentials: bool

    @classmethod
    def from_properties(cls, config: Any) -> Cors | None:
        if not config:
            return None
        if config is True or isinstance(config, str):  # SAM shorthands: true, or one origin
            config = {"AllowOrigins": ["*" if config is True else config],
                      "AllowMethods": ["*"], "AllowHeaders": ["*"]}
        return cls(origins=list(config.get("AllowOrigins") or []),
                   methods=list(config.get("AllowMethods") or []),
                   headers=list(config.get("AllowHeaders") or []),
                   expose=list(config.get("ExposeHeaders") or []),
                   max_age=int(config["MaxAge"]) if "MaxAge" in config else None,
                   credentials=bool(config.get("AllowCredentials")))

    def allowed_origin(self, origin: str | None) -> str | None:
        if not origin:
            return None
        if origin in self.origins:
            return origin
        return "*" if "*" in self.origins else None

    def preflight(self, request: web.Request) -> web.Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        response = web.Response(status=204)
        origin = self.allowed_origin(request.headers.get("Origin"))
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = ",".join(self.methods)
            response.headers["Access-Control-Allow-Headers"] = ",".join(self.headers)
            if self.max_age is not None:
                response.headers["Access-Control-Max-Age"] = str(self.max_age)
            if self.credentials:
                response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    def decorate(self, request: web.Request, response: web.Response) -> None:
        origin = self.allowed_origin(request.headers.get("Origin"))
        if origin is None:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        if self.expose:
            response.headers["Access-Control-Expose-Headers"] = ",".join(self.expose)
        if self.credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"


def routes_from_functions(specs: list[FunctionSpec]) -> list[HttpRoute]:
    routes = []
    for spec in specs:
        for name, event in spec.events.items():
            if event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            version = str(props.get("PayloadFormatVersion", "2.0"))
            if version != "2.0":
                raise TemplateError(f"{spec.logical_id}.{name}: only payload format 2.0 is served locally")
            method = str(props.get("Method", "ANY")).upper()
            routes.append(HttpRoute("ANY" if method in ("*", "ANY") else method,
                                    str(props.get("Path", "$default")), spec))
    return routes


def http_api_from_template(template: Template, resolver: Resolver, specs: list[FunctionSpec],
                           pools: dict[str, FunctionPool], account_id: str,
                           meter: Meter | None = None) -> HttpApi:
    """All HttpApi routes on one server; CORS and the API id from the template's HttpApi
    (several HttpApi resources are merged: the first one's settings apply)."""
    apis = [r for r in template.of_type("AWS::Serverless::HttpApi") if resolver.included(r)]
    props = resolver.resolve(apis[0].properties) if apis else {}
    api_id = resolver.refs[apis[0].logical_id] if apis else "localhttp0"
    return HttpApi(routes_from_functions(specs), pools, api_id=api_id, account_id=account_id,
                   cors=Cors.from_properties(props.get("CorsConfiguration")), meter=meter)


class HttpApi:
    def __init__(self, routes: list[HttpRoute], pools: dict[str, FunctionPool], *,
                 api_id: str, account_id: str, cors: Cors | None = None,
                 meter: Meter | None = None) -> None:
        self.routes = routes
        self._meter = meter   # cost.py: requests that reached a route (API Gateway bills those)
        self.cors = cors
        self._pools = pools
        self._api_id = api_id
        self._account_id = account_id

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._handle)
        return app

    def select(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        best = None
        for route in self.routes:
            found = route.match(method, path)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], route, found[1])
        return (best[1], best[2]) if best else None

    async def _handle(self, request: web.Request) -> web.Response:
        preflight = self.cors.preflight(request) if self.cors else None
        if preflight is not None:
            return preflight
        response = await self._route(request)
        if self.cors is not None:
            self.cors.decorate(request, response)
        return response

    async def _route(self, request: web.Request) -> web.Response:
        selected = self.select(request.method, request.path)
        if selected is None:
            return web.json_response({"message": "Not Found"}, status=404)
        route, params = selected
        if self._meter is not None:
            self._meter.http_request(request.content_length or 0)
        event = await self._event(request, route, params)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        call = asyncio.ensure_future(self._pools[route.function.key].invoke(
            json.dumps(event).encode(), _caller(request), started=started))
        try:
            # The integration timeout runs from when an instance takes the request: time queued
            # for one of this emulator's few instances would not exist on Lambda, which scales
            # out per request (a burst of 150 on a busy machine queued past 30 s and got 503s).
            await asyncio.wait({started, call}, return_when=asyncio.FIRST_COMPLETED)
            raw = await asyncio.wait_for(call, INTEGRATION_TIMEOUT_S)
        except asyncio.TimeoutError:
            return web.json_response({"message": "Service Unavailable"}, status=503)
        except asyncio.CancelledError:  # the caller went away: so does its invocation
            call.cancel()
            raise
        except FunctionError as exc:
            log.warning("%s failed: %s", route.key, exc)
            return web.json_response({"message": "Internal Server Error"}, status=500)
        return to_http_response(raw)

    async def _event(self, request: web.Request, route: HttpRoute,
                     params: dict[str, str]) -> dict[str, Any]:
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in request.headers.items():
            key = name.lower()
            if key == "cookie":
                cookies += [c.strip() for c in value.split(";") if c.strip()]
            else:
                headers[key] = f"{headers[key]},{value}" if key in headers else value
        query: dict[str, str] = {}
        for name, value in request.query.items():
            query[name] = f"{query[name]},{value}" if name in query else value
        now_ms = int(time.time() * 1000)
        request_id = new_id()
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.key,
            "rawPath": request.raw_path.split("?", 1)[0],
            "rawQueryString": request.rel_url.raw_query_string,
            "headers": headers,
            "requestContext": {
                "accountId": self._account_id,
                "apiId": self._api_id,
                "domainName": request.host,
                "domainPrefix": request.host.split(".", 1)[0],
                "http": {
                    "method": request.method,
                    "path": request.path,
                    "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                    "sourceIp": request.remote or "127.0.0.1",
                    "userAgent": request.headers.get("User-Agent", ""),
                },
                "requestId": request_id,
                "routeKey": route.key,
                "stage": "$default",
                "time": request_time(now_ms),
                "timeEpoch": now_ms,
            },
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = params
        body = await request.read()
        if body:
            text = _as_text(body, request.headers.get("Content-Type", ""))
            event["body"] = text if text is not None else base64.b64encode(body).decode()
            event["isBase64Encoded"] = text is None
        return event


def _as_text(body: bytes, content_type: str) -> str | None:
    """The body as text when API Gateway would pass it as text, else None (base64)."""
    content_type = content_type.lower()
    if content_type and not any(t in content_type for t in _TEXT_TYPES):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def to_http_response(raw: bytes) -> web.Response:
    """Map a payload-2.0 function response to HTTP the way API Gateway does."""
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        return web.json_response({"message": "Internal Server Error"}, status=500)
    if not isinstance(doc, dict) or "statusCode" not in doc:
        # API Gateway's inference: any other JSON is a 200 application/json body.
        return web.Response(status=200, body=raw, content_type="application/json")
    body = doc.get("body")
    if body is None:
        data = b""
    elif doc.get("isBase64Encoded"):
        data = base64.b64decode(body)
    else:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
    response = web.Response(status=int(doc["statusCode"]), body=data)
    headers = {str(k): str(v) for k, v in (doc.get("headers") or {}).items()}
    response.headers.update(headers)
    if not any(k.lower() == "content-type" for k in headers):
        response.headers["Content-Type"] = "application/json"
    for cookie in doc.get("cookies") or []:
        response.headers.add("Set-Cookie", str(cookie))
    return response


def _caller(request: web.Request) -> str:
    """The queue lane of a request (runtime.FairQueue): its credentials, else its address. On
    AWS every request gets an instance of its own, so one caller's burst never queues another's
    request; here they share a few instances, taken round-robin across callers."""
    credentials = request.headers.get("Authorization", "")
    if credentials:
        return "http:" + hashlib.sha256(credentials.encode()).hexdigest()[:16]
    return f"http:{request.remote}"
