"""The WebSocket API and its @connections management API, served as API Gateway serves them.

A connection is registered while its authorizer and $connect run, but management calls answer
410 until the handshake completed (as on AWS: a $connect function cannot post to its own
connection). Every message is routed in its own task, so a function that posts back to the
gateway while it is being invoked (or several at once) never waits on the gateway.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import enum
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .access import Access, credential_of, denied_response
from .cost import Meter
from .faults import Faults, error_type
from .iam import Request
from .functions import FunctionSpec
from .runtime import FunctionError, FunctionPool
from .sigv4 import Verifier
from .wsapi import (AuthorizerVerdict, ConnectRequest, EventContext, Route, WebSocketApi,
                    authorizer_context, new_id, response_body)

log = logging.getLogger("herald_local")
# aiohttp warns when the client's subprotocols and ours do not overlap, quoting the client's
# list - which may carry a token (e.g. ["app.v1", JWT]). A token must never reach the logs.
logging.getLogger("aiohttp.websocket").setLevel(logging.ERROR)

FRAME_LIMIT = 32 * 1024      # client frames (and, locally, whole messages): else close 1009
POST_LIMIT = 128 * 1024      # @connections POST data: else 413
CLOSE_TIMEOUT_S = 2.0        # how long a server-side close waits for the client's close frame


class State(enum.Enum):
    CONNECTING = "connecting"   # authorizer / $connect running: management calls get 410
    OPEN = "open"
    CLOSED = "closed"


@dataclass(eq=False)
class Connection:
    ctx: EventContext
    transport: Any
    state: State = State.CONNECTING
    ws: web.WebSocketResponse | None = None
    opened_at: float = field(default_factory=time.monotonic)
    last_message: float = field(default_factory=time.monotonic)  # idle timeout counts from it
    last_active: float = field(default_factory=time.time)        # what GET @connections reports
    server_close: tuple[int, str] | None = None   # set when the gateway ends it

    @property
    def id(self) -> str:
        return self.ctx.connection_id

    async def send(self, data: bytes, binary: bool = False) -> None:
        assert self.ws is not None
        await self.ws.send_frame(data, WSMsgType.BINARY if binary else WSMsgType.TEXT)


class _Refused(Exception):
    """The handshake is answered with this HTTP response instead of an upgrade."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.response = web.Response(status=status, text=body, content_type="application/json")


def _message(text: str) -> str:
    return json.dumps({"message": text})


def management_error(status: int, message: str) -> web.Response:
    """An error the AWS SDKs map to a typed exception (restJson1 reads x-amzn-ErrorType)."""
    return web.Response(status=status, text=_message(message), content_type="application/json",
                        headers={"x-amzn-ErrorType": error_type(status)})


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class Gateway:
    def __init__(self, api: WebSocketApi, pools: dict[str, FunctionPool], faults: Faults, *,
                 region: str, account_id: str, idle_timeout_s: float,
                 max_connection_s: float, verifier: Verifier | None = None,
                 access: Access | None = None, meter: Meter | None = None) -> None:
        self.api = api
        self._meter = meter   # cost.py: messages both ways, connection time
        self._pools = pools
        self._faults = faults
        self._region = region
        self._account_id = account_id
        self._idle_timeout_s = idle_timeout_s
        self._max_connection_s = max_connection_s
        self._verifier = verifier
        self._access = access
        self.connections: dict[str, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def add_routes(self, app: web.Application) -> None:
        stage = "/" + self.api.stage
        app.router.add_get(stage, self._websocket)
        app.router.add_get(stage + "/", self._websocket)
        management = stage + "/@connections/{connection_id}"
        app.router.add_post(management, self._post)
        app.router.add_get(management, self._get)
        app.router.add_delete(management, self._delete)

    # --- management API (hot path: keep it lean) -------------------------------------------

    def _open_connection(self, request: web.Request) -> Connection | None:
        conn = self.connections.get(request.match_info["connection_id"])
        return conn if conn is not None and conn.state is State.OPEN else None

    def _refused(self, request: web.Request, body: bytes) -> web.Response | None:
        """403 unless the call is SigV4-signed with credentials the stack knows (when IAM is on)
        and, when a function signed it, its role allows execute-api:ManageConnections on the
        method and path (API Gateway's resource ARN of a management call)."""
        if self._verifier is not None:
            refusal = self._verifier.check(request.method, f"http://{request.host}{request.raw_path}",
                                           request.headers, body)
            if refusal is not None:
                return web.Response(status=403, text=_message(refusal.message),
                                    content_type="application/json",
                                    headers={"x-amzn-ErrorType": refusal.error_type})
        if self._access is None:
            return None
        credential = credential_of(request.headers)
        who = self._access.identity(credential[0] if credential else None)
        if who is None:
            return None
        call = Request("execute-api:ManageConnections",
                       f"arn:aws:execute-api:{self._region}:{self._account_id}:{self.api.api_id}/"
                       f"{self.api.stage}/{request.method}/@connections/{request.match_info['connection_id']}")
        decision = self._access.decide(who, call)
        if decision.allowed:
            return None
        status, headers, text = denied_response("execute-api", request.headers,
                                                self._access.message(who, call, decision))
        return web.Response(status=status, body=text, headers=headers)

    async def _post(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > POST_LIMIT:
            return management_error(413, "data exceeds 128 KB")
        data = await request.read()
        if len(data) > POST_LIMIT:
            return management_error(413, "data exceeds 128 KB")
        refused = self._refused(request, data)
        if refused is not None:
            return refused
        conn = self._open_connection(request)
        if conn is None:
            return management_error(410, "connection is gone")
        status = self._faults.post_status(conn.id)
        if status is not None:
            return management_error(status, "injected fault")
        try:
            data.decode("utf-8")
            binary = False
        except UnicodeDecodeError:
            binary = True
        started = time.monotonic()
        try:
            await conn.send(data, binary)
        except ConnectionError:
            return management_error(410, "connection is gone")
        waited = time.monotonic() - started
        if waited > 0.5:   # the client does not read: its socket's buffer is full
            log.warning("a post to %s waited %.2f s for the client to read", conn.id, waited)
        if self._meter is not None:
            self._meter.frame_out(len(data))
        return web.Response()

    async def _get(self, request: web.Request) -> web.Response:
        refused = self._refused(request, await request.read())
        if refused is not None:
            return refused
        conn = self._open_connection(request)
        if conn is None:
            return management_error(410, "connection is gone")
        return web.json_response({
            "connectedAt": _iso(conn.ctx.connected_at_ms / 1000),
            "identity": {"sourceIp": conn.ctx.request.source_ip,
                         "userAgent": conn.ctx.request.user_agent},
            "lastActiveAt": _iso(conn.last_active),
        })

    async def _delete(self, request: web.Request) -> web.Response:
        refused = self._refused(request, await request.read())
        if refused is not None:
            return refused
        conn = self._open_connection(request)
        if conn is None:
            return management_error(410, "connection is gone")
        self._close(conn, 1000, "Connection deleted")
        return web.Response(status=204)

    # --- control helpers -------------------------------------------------------------------

    def open_connections(self) -> list[Connection]:
        return [conn for conn in self.connections.values() if conn.state is State.OPEN]

    def drop(self, connection_id: str) -> bool:
        """Cut the TCP connection without a close frame; $disconnect still fires (1006)."""
        conn = self.connections.get(connection_id)
        if conn is None or conn.state is not State.OPEN:
            return False
        conn.transport.abort()
        return True

    async def close(self) -> None:
        """Shutdown: close every connection with 1001, without $disconnect (functions stop)."""
        self._closing = True
        for task in list(self._tasks):  # in-flight routes and $disconnects
            task.cancel()
        for conn in list(self.connections.values()):
            if conn.state is State.OPEN:
                self._close(conn, 1001, "Going away")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)

    # --- connection lifecycle --------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=426, text=_message("Upgrade Required"),
                                content_type="application/json")
        conn = Connection(ctx=self._event_context(request), transport=request.transport)
        self.connections[conn.id] = conn
        try:
            protocol = await self._connect(conn)
        except _Refused as refused:
            self.connections.pop(conn.id, None)
            return refused.response
        ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (),
                                   max_msg_size=FRAME_LIMIT + 1, timeout=CLOSE_TIMEOUT_S)
        try:
            await ws.prepare(request)
        except ConnectionError:
            self._disconnected(conn, 1006, "Connection was closed abnormally")
            return ws
        if protocol and ws.ws_protocol != protocol:
            log.warning("$connect answered subprotocol %r, which the client did not offer", protocol)
        conn.ws = ws
        conn.state = State.OPEN
        if self._meter is not None:
            self._meter.connected(conn.id)
        code, reason = await self._serve(conn)
        self._disconnected(conn, code, reason)
        return ws

    def _event_context(self, request: web.Request) -> EventContext:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        source_ip = request.remote or "127.0.0.1"
        # API Gateway adds these in front of the Lambda; functions may log or trust them.
        headers += [("X-Forwarded-For", source_ip), ("X-Forwarded-Proto", request.scheme)]
        connect_request = ConnectRequest(
            headers=headers, query=list(request.query.items()), source_ip=source_ip,
            user_agent=request.headers.get("User-Agent", ""), host=request.host)
        return EventContext(api=self.api, connection_id=new_id(),
                            connected_at_ms=int(time.time() * 1000), request=connect_request,
                            region=self._region, account_id=self._account_id)

    async def _connect(self, conn: Connection) -> str | None:
        """Authorizer, then $connect. Returns the subprotocol to answer; raises _Refused."""
        route = self.api.routes.get("$connect")
        if route is None:
            return None
        if route.authorizer is not None:
            conn.ctx.authorizer = await self._authorize(conn, route)
        if route.function is None:
            return None
        try:
            raw = await self._invoke(route.function, conn.ctx.connect_event())
        except FunctionError as exc:
            log.warning("$connect failed: %s", exc)
            raise _Refused(502, _message("Internal server error")) from None
        try:
            response = json.loads(raw) if raw else {}
        except ValueError:
            response = {}
        response = response if isinstance(response, dict) else {}
        status = int(response.get("statusCode") or 200)
        if not 200 <= status < 300:
            body = response.get("body")
            raise _Refused(status, body if isinstance(body, str) else _message("Forbidden"))
        headers = {str(k).lower(): v for k, v in (response.get("headers") or {}).items()}
        protocol = headers.get("sec-websocket-protocol")
        return str(protocol) if protocol else None

    async def _authorize(self, conn: Connection, route: Route) -> dict[str, Any]:
        assert route.authorizer is not None
        for source in route.authorizer.identity_sources:
            if not conn.ctx.request.identity_value(source):  # API Gateway: 401, not invoked
                raise _Refused(401, _message("Unauthorized"))
        started = time.monotonic()
        try:
            raw = await self._invoke(route.authorizer.function, conn.ctx.authorizer_event())
        except FunctionError as exc:
            if exc.message == "Unauthorized":
                raise _Refused(401, _message("Unauthorized")) from None
            log.warning("authorizer failed: %s", exc)
            raise _Refused(500, _message("Internal server error")) from None
        try:
            context = authorizer_context(json.loads(raw), conn.ctx.method_arn("$connect"))
        except ValueError:
            raise _Refused(500, _message("Internal server error")) from None
        except AuthorizerVerdict as verdict:
            if verdict.status == 500:
                log.warning("authorizer response rejected: %s", verdict.message)
                raise _Refused(500, _message("Internal server error")) from None
            raise _Refused(verdict.status, _message(verdict.message)) from None
        context["integrationLatency"] = int((time.monotonic() - started) * 1000)
        return context

    async def _serve(self, conn: Connection) -> tuple[int, str]:
        """Read client frames until the connection ends; returns the $disconnect status."""
        ws = conn.ws
        assert ws is not None
        max_deadline = conn.opened_at + self._max_connection_s
        while True:
            deadline = min(conn.last_message + self._idle_timeout_s, max_deadline)
            timeout = deadline - time.monotonic()
            try:
                msg = await ws.receive(timeout=max(timeout, 0.001))
            except asyncio.TimeoutError:
                # Idle or too old. Close here: once the handler returns, aiohttp closes with 1000.
                conn.state = State.CLOSED
                conn.server_close = (1001, "Going away")
                await ws.close(code=1001, message=b"Going away")
                return conn.server_close
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                if self._meter is not None:
                    data = msg.data
                    self._meter.frame_in(len(data) if isinstance(data, bytes) or data.isascii()
                                         else len(data.encode("utf-8")))
                conn.last_active = time.time()
                conn.last_message = time.monotonic()
                self._spawn(self._route(conn, msg.data))
                continue
            if conn.server_close is not None:
                return conn.server_close
            if msg.type is WSMsgType.CLOSE:
                code = int(msg.data) if msg.data else 1005
                reason = msg.extra or ("Client-side close frame status not set"
                                       if code == 1005 else "")
                return code, reason
            if msg.type is WSMsgType.ERROR and ws.close_code == 1009:
                return 1009, "Message too big"
            return 1006, "Connection was closed abnormally"

    def _close(self, conn: Connection, code: int, reason: str) -> None:
        """Server-side close from outside the connection's task (DELETE, shutdown): management
        calls see 410 at once; the close frame follows and wakes the receive loop."""
        conn.state = State.CLOSED
        conn.server_close = (code, reason)
        if conn.ws is not None:
            self._spawn(conn.ws.close(code=code, message=reason.encode()))

    def _disconnected(self, conn: Connection, code: int, reason: str) -> None:
        conn.state = State.CLOSED
        if self._meter is not None:
            self._meter.disconnected(conn.id)
        self.connections.pop(conn.id, None)
        route = self.api.routes.get("$disconnect")
        if self._closing or route is None or route.function is None:
            return
        self._spawn(self._invoke_quietly(route.function, conn.ctx.disconnect_event(code, reason)))

    # --- messages --------------------------------------------------------------------------

    async def _route(self, conn: Connection, data: str | bytes) -> None:
        if isinstance(data, bytes):  # a binary frame: base64, and never selected by its body
            body, is_base64 = base64.b64encode(data).decode(), True
            route = self.api.select_route(None)
        else:
            body, is_base64 = data, False
            route = self.api.select_route(body)
        if route is None or route.function is None:
            await self._reply(conn, {"message": "Forbidden", "connectionId": conn.id,
                                     "requestId": new_id()})
            return
        event = conn.ctx.message_event(route.key, body, is_base64)
        try:
            raw = await self._invoke(route.function, event, source=conn.id)
        except FunctionError as exc:
            log.warning("route %s failed: %s", route.key, exc)
            await self._reply(conn, {"message": "Internal server error", "connectionId": conn.id,
                                     "requestId": event["requestContext"]["requestId"]})
            return
        if route.two_way:
            out = response_body(raw)
            if out is not None:
                await self._send_if_open(conn, *out)

    async def _reply(self, conn: Connection, doc: dict[str, Any]) -> None:
        await self._send_if_open(conn, json.dumps(doc).encode(), False)

    async def _send_if_open(self, conn: Connection, data: bytes, binary: bool) -> None:
        if conn.state is State.OPEN:
            try:
                await conn.send(data, binary)
            except ConnectionError:
                return
            if self._meter is not None:
                self._meter.frame_out(len(data))

    # --- plumbing ---------------------------------------------------------------------------

    async def _invoke(self, function: FunctionSpec, event: dict[str, Any],
                      source: str | None = None) -> bytes:
        return await self._pools[function.key].invoke(json.dumps(event).encode(), source)

    async def _invoke_quietly(self, function: FunctionSpec, event: dict[str, Any]) -> None:
        try:
            await self._invoke(function, event)
        except FunctionError as exc:
            log.warning("$disconnect failed: %s", exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
