"""The AWS endpoint proxy: functions reach the AWS endpoint through it. It adds what the local
endpoint lacks and AWS does — SQS keeps the caller's `X-Amzn-Trace-Id` header as the message's
`AWSTraceHeader`, which is how Lambda's recursive loop detection follows a request chain through
a queue (moto only keeps an explicit system attribute) — and lets the control API make a call
fail the way AWS does under load (a throttling error) or arrive late (a slow log write).
Otherwise it forwards each request unchanged and answers what the endpoint answered. Only
functions go through it; the stack's own pollers and provisioning talk to the endpoint
directly, so a fault never stalls the emulator itself.

Calls are told apart by their `X-Amz-Target` header (DynamoDB's and SQS's JSON protocols), and a
rule may also require a substring of the body (a table or queue name).
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from aiohttp import web

from .faults import Faults

log = logging.getLogger("herald_local.awsproxy")

# Request headers that describe one hop, not the call.
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

# The error an injected fault answers when the rule names none: what each service says when it
# throttles (the SDKs retry both with backoff).
_THROTTLE = {
    "DynamoDB": "ProvisionedThroughputExceededException",
    "AmazonSQS": "RequestThrottled",
}


class AwsProxy:
    def __init__(self, upstream: str, faults: Faults) -> None:
        self._upstream = upstream.rstrip("/")
        self._faults = faults
        self._session: aiohttp.ClientSession | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        fault = self._faults.aws_fault(target, body) if target and self._faults.aws else None
        if fault is not None and fault.status is not None:
            error = fault.error_type or _THROTTLE.get(target.split(".")[0].split("_")[0], "ThrottlingException")
            return web.Response(
                status=fault.status, content_type="application/x-amz-json-1.0",
                headers={"x-amzn-ErrorType": error},
                text=json.dumps({"__type": error, "message": "injected fault (herald-local)"}))
        if fault is not None:
            await asyncio.sleep(fault.delay_ms / 1000)
        trace = request.headers.get("X-Amzn-Trace-Id")
        if trace and target in ("AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch"):
            body = _with_trace_header(body, target, trace)
        if self._session is None:
            # No total timeout: the SDK's own timeouts apply, as they would against AWS.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(request.method, self._upstream + request.rel_url.raw_path_qs,
                                         headers=headers, data=body) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items()
                   if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"}
            if "Content-Encoding" in upstream.headers:
                out["Content-Encoding"] = upstream.headers["Content-Encoding"]
            return web.Response(status=upstream.status, body=payload, headers=out)


def _with_trace_header(body: bytes, target: str, trace: str) -> bytes:
    """The SendMessage(Batch) request with `AWSTraceHeader` set from the HTTP header, unless the
    caller set it explicitly (SQS keeps the explicit one)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body  # not ours to judge: the endpoint answers the malformed request
    attribute = {"AWSTraceHeader": {"DataType": "String", "StringValue": trace}}
    messages = doc.get("Entries") if target.endswith("Batch") else [doc]
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict):
            message.setdefault("MessageSystemAttributes", attribute)
    return json.dumps(doc).encode()
