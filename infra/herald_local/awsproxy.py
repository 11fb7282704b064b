"""The AWS endpoint proxy: functions reach the AWS endpoint through it. It adds what the local
endpoint lacks and AWS does — SQS keeps the caller's `X-Amzn-Trace-Id` header as the message's
`AWSTraceHeader`, which is how Lambda's recursive loop detection follows a request chain through
a queue (moto only keeps an explicit system attribute) — and lets the control API make a call
fail the way AWS does under load (a throttling error) or arrive late (a slow log write).
Otherwise it forwards each request unchanged and answers what the endpoint answered. Only
functions go through it; the stack's own pollers and provisioning talk to the endpoint
directly, so a fault never stalls the emulator itself.

With `access` (access.py), the proxy is also where IAM is enforced on the functions' calls: the
access key that signed a call names the function, and a call its role does not allow is answered
with the service's AccessDenied instead of being forwarded.

Calls are told apart by their `X-Amz-Target` header (DynamoDB's and SQS's JSON protocols), and a
rule may also require a substring of the body (a table or queue name).

With a moto of the stack's own, each table lives in a moto process of its own (aws.py says why),
so the proxy also routes: a DynamoDB call goes to the process of the table it names, anything
else to the endpoint. The stack serves a second proxy without faults as the ready file's
`awsEndpoint`, so tests and tools still see one endpoint. Two things AWS allows cannot be served
that way and are refused with a clear error: one call that names tables in different processes
(a BatchWriteItem or TransactWriteItems across tables; Herald makes none) and PartiQL, whose
statements name tables in text. ListTables is asked of every process and the answers merged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from aiohttp import web

from .access import Access, Identity, Target, Unclassified, classify_aws, credential_of, denied_response
from .cost import CAPACITY_HEADER, Meter
from .faults import Faults
from .iam import Decision
from .upstream import Upstream, UpstreamError

log = logging.getLogger("herald_local.awsproxy")

# $HERALD_LOCAL_RECORD=FILE: every DynamoDB call the functions make is appended to FILE as a JSON
# line (time, target, body, status, the calling function), for bench/dynamo_backends.py to replay
# against a back-end.
_RECORD = open(os.environ["HERALD_LOCAL_RECORD"], "a", buffering=1) if os.environ.get("HERALD_LOCAL_RECORD") else None  # noqa: SIM115

# Request headers that describe one hop, not the call.
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

# The error an injected fault answers when the rule names none: what each service says when it
# throttles (the SDKs retry both with backoff).
_THROTTLE = {
    "DynamoDB": "ProvisionedThroughputExceededException",
    "AmazonSQS": "RequestThrottled",
}


class Upstreams:
    """Where a call goes: DynamoDB calls to the process of the table they name (`tables`: name ->
    URL), everything else (and a table not listed) to `default`."""

    def __init__(self, default: str, tables: dict[str, str] | None = None) -> None:
        self.default = default.rstrip("/")
        self.tables = {name: url.rstrip("/") for name, url in (tables or {}).items()}
        self._split = bool(set(self.tables.values()) - {self.default})

    def route(self, target: str, body: bytes) -> str | web.Response:
        """The URL to forward the call to, or the error that answers it."""
        if not self._split or not target.startswith("DynamoDB_"):
            return self.default
        operation = target.partition(".")[2]
        if operation in ("ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"):
            return _error(400, "ValidationException", "PartiQL is not served by herald-local's "
                          "split moto (each table in its own process); use the item operations")
        urls = {self.tables.get(name, self.default) for name in _tables_named(body)}
        if len(urls) > 1:
            return _error(400, "ValidationException", "one call across tables in different moto "
                          "processes is not served by herald-local (each table in its own process)")
        return urls.pop() if urls else self.default

    def everywhere(self) -> list[str]:
        return sorted({self.default, *self.tables.values()})


def _tables_named(body: bytes) -> set[str]:
    """The tables a DynamoDB request names: `TableName`, the keys of `RequestItems` (batches)
    or the items of `TransactItems`."""
    try:
        doc = json.loads(body)
    except ValueError:
        return set()  # the endpoint answers the malformed request
    if not isinstance(doc, dict):
        return set()
    names = {doc["TableName"]} if isinstance(doc.get("TableName"), str) else set()
    if isinstance(doc.get("RequestItems"), dict):
        names.update(doc["RequestItems"])
    for item in doc.get("TransactItems") or []:
        for action in item.values() if isinstance(item, dict) else []:
            if isinstance(action, dict) and isinstance(action.get("TableName"), str):
                names.add(action["TableName"])
    return names


def _error(status: int, error: str, message: str) -> web.Response:
    return web.Response(status=status, content_type="application/x-amz-json-1.0",
                        headers={"x-amzn-ErrorType": error},
                        text=json.dumps({"__type": error, "message": message}))


class AwsProxy:
    """`meter` (cost.py) counts the calls it forwards as `caller` (functions, producers)."""

    def __init__(self, upstream: str | Upstreams, faults: Faults, access: Access | None = None,
                 target: Target | None = None, meter: Meter | None = None,
                 caller: str = "functions") -> None:
        self._upstreams = upstream if isinstance(upstream, Upstreams) else Upstreams(upstream)
        self._meter = meter
        self._caller = caller
        self._faults = faults
        self._access = access
        self._target = target
        self._clients: dict[str, Upstream] = {}

    def application(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        for client in self._clients.values():
            client.close()

    def _signer(self, request: web.Request) -> tuple[tuple[str, str] | None, Identity | None]:
        """The request's SigV4 credential scope, and the function whose credentials signed it."""
        assert self._access is not None
        credential = credential_of(request.headers, request.query)
        return credential, self._access.identity(credential[0] if credential else None)

    def _function_of(self, request: web.Request) -> str | None:
        who = self._signer(request)[1] if self._access else None
        return who.function if who else None

    def _refused(self, request: web.Request, body: bytes) -> web.Response | None:
        """AccessDenied when a function signed the call and its role does not allow all of it."""
        assert self._access is not None and self._target is not None
        credential, who = self._signer(request)
        if who is None or credential is None:
            return None   # the stack's own credentials (or unsigned): not a function's call
        service = credential[1]
        try:
            calls = classify_aws(service, request.method, request.path, dict(request.query),
                                 request.headers, body, self._target)
        except Unclassified as exc:
            log.warning("IAM: %s made a call the local stack cannot authorize (%s): refused",
                        who.function, exc)
            status, headers, text = denied_response(service, request.headers, str(exc))
            return web.Response(status=status, body=text, headers=headers)
        for call in calls:
            decision: Decision = self._access.decide(who, call)
            if not decision.allowed:
                status, headers, text = denied_response(
                    service, request.headers, self._access.message(who, call, decision))
                return web.Response(status=status, body=text, headers=headers)
        return None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self._access is not None:
            refused = self._refused(request, body)
            if refused is not None:
                return refused
        target = request.headers.get("X-Amz-Target", "")
        fault = self._faults.aws_fault(target, body) if target and self._faults.aws else None
        if fault is not None and fault.status is not None:
            error = fault.error_type or _THROTTLE.get(target.split(".")[0].split("_")[0], "ThrottlingException")
            return _error(fault.status, error, "injected fault (herald-local)")
        if fault is not None and fault.unprocessed:
            return _unprocessed(target, body)
        if fault is not None:
            await asyncio.sleep(fault.delay_ms / 1000)
        trace = request.headers.get("X-Amzn-Trace-Id")
        if trace and target in ("AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch"):
            body = _with_trace_header(body, target, trace)
        if target == "DynamoDB_20120810.ListTables" and len(self._upstreams.everywhere()) > 1:
            return await self._list_tables(request, body)
        upstream = self._upstreams.route(target, body)
        if isinstance(upstream, web.Response):
            return upstream
        status, payload, out, capacity = await self._call(request, upstream, body)
        if _RECORD is not None and target.startswith("DynamoDB_"):
            _RECORD.write(json.dumps({"t": time.time(), "target": target, "body": body.decode(), "status": status,
                                      "function": self._function_of(request)}) + "\n")
        if self._meter is not None:
            self._count(request, target, body, payload, capacity)
        return web.Response(status=status, body=payload, headers=out)

    def _count(self, request: web.Request, target: str, body: bytes, payload: bytes,
               capacity: str | None) -> None:
        """One forwarded call on the meter: DynamoDB's units as its moto process reported them
        (none for a refused call or a table operation), SQS requests by the larger of request
        and answer (the wire JSON stands for the payload: a few hundred bytes more than AWS
        measures, which only matters within that of a 64 KB boundary), any other service's
        calls by method."""
        assert self._meter is not None
        if capacity:
            read, write, table = capacity.split(" ", 2)
            self._meter.dynamodb_call(target.partition(".")[2], table, float(read), int(write))
        elif target.startswith("AmazonSQS."):
            self._meter.sqs_call(target[len("AmazonSQS."):], self._caller, max(len(body), len(payload)))
        elif not target:
            credential = credential_of(request.headers)
            self._meter.aws_call(credential[1] if credential else "unknown", request.method)

    async def _call(self, request: web.Request, upstream: str,
                    body: bytes) -> tuple[int, bytes, dict[str, str], str | None]:
        """The upstream's answer, and the capacity its back-end reported (taken off the
        headers the caller sees). No timeout: the SDK's own timeouts apply, as they would
        against AWS."""
        client = self._clients.get(upstream)
        if client is None:
            client = self._clients[upstream] = Upstream(upstream)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS]
        try:
            status, answer_headers, payload = await client.request(
                request.method, request.rel_url.raw_path_qs, headers, body)
        except (OSError, UpstreamError, asyncio.IncompleteReadError) as exc:
            log.warning("AWS endpoint %s did not answer: %s", upstream, exc)
            return 502, b"", {}, None
        out: dict[str, str] = {}
        capacity = None
        for name, value in answer_headers:
            lower = name.lower()
            if lower == CAPACITY_HEADER:
                capacity = value
            elif lower not in _HOP_HEADERS:
                out[name] = value
        return status, payload, out, capacity

    async def _list_tables(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """ListTables of every process, merged and paged as DynamoDB pages (by name)."""
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return _error(400, "SerializationException", "the request body is not a JSON object")
        names: set[str] = set()
        for upstream in self._upstreams.everywhere():
            status, payload, out, _ = await self._call(request, upstream, b"{}")
            if status != 200:
                return web.Response(status=status, body=payload, headers=out)
            names.update(_table_names(payload))
        start, limit = doc.get("ExclusiveStartTableName"), doc.get("Limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            return _error(400, "ValidationException", "Limit must be between 1 and 100")
        listed = sorted(n for n in names if start is None or n > start)
        answer: dict[str, object] = {"TableNames": listed[:limit]}
        if len(listed) > limit:
            answer["LastEvaluatedTableName"] = listed[limit - 1]
        return web.Response(content_type="application/x-amz-json-1.0", text=json.dumps(answer))


def _unprocessed(target: str, body: bytes) -> web.Response:
    """A batch call answered as DynamoDB answers one over its throughput: 200, nothing done,
    every key (BatchGetItem) or write (BatchWriteItem) handed back to retry."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    requested = doc.get("RequestItems") if isinstance(doc, dict) else None
    if not isinstance(requested, dict):
        return _error(400, "ValidationException", "RequestItems is required")
    if target.endswith("BatchGetItem"):
        answer = {"Responses": {table: [] for table in requested}, "UnprocessedKeys": requested}
    else:
        answer = {"UnprocessedItems": requested}
    return web.Response(content_type="application/x-amz-json-1.0", text=json.dumps(answer))


def _table_names(payload: bytes) -> list[str]:
    """A ListTables answer's names. moto answers every name at once (it does not page unless
    asked to)."""
    try:
        names = json.loads(payload).get("TableNames")
    except (ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


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
