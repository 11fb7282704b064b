"""Control API (local only), under the adapter's `control_path` on the WebSocket port: health,
the stack's endpoints, connections, faults (posts, pushes, kills, redeliveries, AWS calls), the
Web Push service (pushservice.py, under `push/`), direct invocation (like `sam local invoke -e`),
sending to the stack's queues, development tokens, and the cost meter (cost.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .adapter import Adapter
from .cost import Meter
from .faults import Faults
from .gateway import Gateway
from .runtime import FunctionError, FunctionPool


PEEK_LIMIT = 100   # messages a peek returns at most


class Control:
    def __init__(self, *, gateway: Gateway | None, pools: dict[str, FunctionPool], faults: Faults,
                 adapter: Adapter, ready: asyncio.Event,
                 info: Callable[[], dict[str, Any]] = dict, sqs: Any = None,
                 access: Any = None, meter: Meter | None = None) -> None:
        self._gateway = gateway
        self._meter = meter
        self._access = access   # access.Access, when the functions' IAM is checked
        self._info = info   # the ready file's content, once ready
        self._sqs = sqs     # a boto3 SQS client of the stack's AWS endpoint
        self._pools = pools
        self._faults = faults
        self._adapter = adapter
        self._ready = ready

    def add_routes(self, app: web.Application) -> None:
        r, root = app.router, self._adapter.control_path
        r.add_get(f"{root}/health", self._health)
        r.add_get(f"{root}/endpoints", self._endpoints)
        r.add_get(f"{root}/connections", self._connections)
        r.add_post(f"{root}/connections/{{connection_id}}/drop", self._drop)
        r.add_post(f"{root}/faults/posts", self._post_fault)
        r.add_post(f"{root}/faults/push", self._push_fault)
        r.add_post(f"{root}/faults/kill", self._kill_fault)
        r.add_post(f"{root}/faults/redeliver", self._redeliver_fault)
        r.add_post(f"{root}/faults/aws", self._aws_fault)
        r.add_get(f"{root}/faults", self._fault_counts)
        r.add_delete(f"{root}/faults", self._clear_faults)
        r.add_post(f"{root}/invoke/{{function}}", self._invoke)
        r.add_post(f"{root}/queues/{{queue}}/messages", self._send)
        r.add_get(f"{root}/queues/{{queue}}/messages", self._peek)
        r.add_post(f"{root}/token", self._token)
        r.add_get(f"{root}/iam", self._iam)
        r.add_get(f"{root}/cost", self._cost)
        r.add_delete(f"{root}/cost", self._reset_cost)

    async def _cost(self, _: web.Request) -> web.Response:
        """What the stack's traffic since the last reset would cost on AWS (cost.py)."""
        if self._meter is None:
            return _error(404, "this stack has no cost meter")
        return web.json_response(self._meter.snapshot())

    async def _reset_cost(self, _: web.Request) -> web.Response:
        """Start counting again (open connections count from now)."""
        if self._meter is None:
            return _error(404, "this stack has no cost meter")
        self._meter.reset()
        return web.Response(status=204)

    async def _iam(self, _: web.Request) -> web.Response:
        """The grant report so far: calls each function made and the grants they used, calls
        refused, grants no call used."""
        if self._access is None:
            return web.json_response({"enforced": False, "used": [], "denied": [], "unused": []})
        return web.json_response(self._access.report())

    async def _health(self, _: web.Request) -> web.Response:
        if self._ready.is_set():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "starting"}, status=503)

    async def _endpoints(self, _: web.Request) -> web.Response:
        """Where the stack's APIs are, for a page it serves (a browser cannot read the ready
        file). Only addresses: the keys and secrets of the ready file stay out of it."""
        if not self._ready.is_set():
            return web.json_response({"status": "starting"}, status=503)
        info = self._info()
        return web.json_response({key: info.get(key) for key in (
            "websocketUrl", "httpUrl", "controlUrl", "pushServiceUrl", "managementEndpoint", "awsEndpoint", "region",
            "stage", "queues", "staticUrls")})

    async def _send(self, request: web.Request) -> web.Response:
        """SendMessage of the request body to a queue of the stack (by logical id), as a
        producer would: a page or a script without an AWS SDK can use the real event source."""
        queues = self._info().get("queues") or {}
        url = queues.get(request.match_info["queue"])
        if url is None or self._sqs is None:
            return _error(404, f"unknown queue {request.match_info['queue']!r} (known: {sorted(queues)})")
        body = await request.text()
        if not body:
            return _error(400, "the request body is the message body; it is empty")
        try:
            sent = await asyncio.to_thread(self._sqs.send_message, QueueUrl=url, MessageBody=body)
        except Exception as exc:  # the endpoint's own refusal (size, characters), shown as is
            return _error(400, f"SendMessage failed: {exc}")
        if self._meter is not None:   # a producer's send, made for it
            self._meter.sqs_call("SendMessage", "producers", len(body.encode("utf-8")))
        return web.json_response({"messageId": sent["MessageId"]})

    async def _peek(self, request: web.Request) -> web.Response:
        """The messages on a queue without a consumer (a dead-letter queue), left in place: each
        is received, then made visible again at once. A page shows what dispatch refused, with
        the `reason`/`detail` attributes. Refused for queues with a redrive policy, where a
        receive counts toward maxReceiveCount and would move the message."""
        queue = request.match_info["queue"]
        url = (self._info().get("queues") or {}).get(queue)
        if url is None or self._sqs is None:
            return _error(404, f"unknown queue {queue!r}")

        def peek() -> list[dict[str, Any]] | None:
            attrs = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
            if attrs.get("Attributes", {}).get("RedrivePolicy"):
                return None
            seen: dict[str, dict[str, Any]] = {}
            try:
                while len(seen) < PEEK_LIMIT:  # hidden while collected, so each call brings new ones
                    got = self._sqs.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=0,
                        MessageAttributeNames=["All"], AttributeNames=["SentTimestamp"]).get("Messages") or []
                    fresh = [m for m in got if m["MessageId"] not in seen]
                    if not fresh:
                        break
                    seen.update((m["MessageId"], m) for m in fresh)
            finally:
                for m in seen.values():
                    self._sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                                                        VisibilityTimeout=0)
            return [{"messageId": m["MessageId"], "body": m["Body"],
                     "sentAt": int(m.get("Attributes", {}).get("SentTimestamp", 0)),
                     "attributes": {k: v.get("StringValue") for k, v in (m.get("MessageAttributes") or {}).items()}}
                    for m in seen.values()]

        messages = await asyncio.to_thread(peek)
        if messages is None:
            return _error(409, f"{queue} has a redrive policy: a peek would count as a receive")
        return web.json_response({"messages": sorted(messages, key=lambda m: m["sentAt"])})

    async def _connections(self, _: web.Request) -> web.Response:
        connections = self._gateway.open_connections() if self._gateway else []
        return web.json_response([
            {"connectionId": conn.id, **self._adapter.connection_info(conn.ctx.authorizer),
             "connectedAt": conn.ctx.connected_at_ms}
            for conn in connections])

    async def _drop(self, request: web.Request) -> web.Response:
        if self._gateway and self._gateway.drop(request.match_info["connection_id"]):
            return web.Response(status=204)
        return _error(404, "no such open connection")

    async def _post_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self._faults.add_post_fault(
                int(body.get("status", 500)), connection_ids=body.get("connectionIds"),
                count=body.get("count"), rate=body.get("rate"))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.Response(status=204)

    async def _push_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self._faults.add_push_fault(int(body.get("status", 500)),
                                        subscription_ids=body.get("subscriptionIds"),
                                        count=body.get("count"),
                                        location=body.get("location"),
                                        retry_after=body.get("retryAfter"))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.Response(status=204)

    async def _kill_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        function = str(body.get("function", ""))
        if not self._known(function):
            return _error(404, f"unknown function {function!r}")
        try:
            rate = body.get("rate")
            self._faults.add_kill_fault(function, str(body.get("match", "")), int(body.get("count", 1)),
                                        rate=None if rate is None else float(rate),
                                        after_ms=int(body.get("afterMs", 0)))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.Response(status=204)

    async def _redeliver_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        function = str(body.get("function", ""))
        if not self._known(function):
            return _error(404, f"unknown function {function!r}")
        try:
            self._faults.add_redeliver_fault(function, float(body.get("rate", 1.0)))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.Response(status=204)

    async def _aws_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            status = body.get("status")
            self._faults.add_aws_fault(
                str(body.get("target", "")), match=str(body.get("match", "")),
                rate=float(body.get("rate", 1.0)), status=None if status is None else int(status),
                error_type=str(body.get("errorType", "")), delay_ms=int(body.get("delayMs", 0)),
                unprocessed=body.get("unprocessed") is True,
                count=None if body.get("count") is None else int(body["count"]))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.Response(status=204)

    async def _fault_counts(self, _: web.Request) -> web.Response:
        """What was injected so far, by kind (cleared faults keep their counts)."""
        return web.json_response({"injected": self._faults.counts})

    def _known(self, function: str) -> bool:
        return any(function in (p.spec.key, p.spec.logical_id) for p in self._pools.values())

    async def _clear_faults(self, _: web.Request) -> web.Response:
        self._faults.clear()
        return web.Response(status=204)

    async def _invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["function"]
        pool = self._pools.get(name) or next(
            (p for p in self._pools.values() if name == p.spec.logical_id), None)
        if pool is None:
            return _error(404, f"unknown function {name!r}")
        try:
            result = await pool.invoke(await request.read())
        except FunctionError as exc:
            return web.Response(status=502, body=exc.payload, content_type="application/json",
                                headers={"X-Amz-Function-Error": "Unhandled"})
        return web.Response(body=result, content_type="application/json")

    async def _token(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            token = self._adapter.issue_token(body)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.json_response({"token": token})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not JSON"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}),
                                 content_type="application/json")
    return body


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
