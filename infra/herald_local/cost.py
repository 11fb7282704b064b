"""The cost meter: what a run consumed, counted the way AWS bills it, and priced (prices.py).

The stack counts where the billed traffic passes: DynamoDB capacity in the back-end that holds the
tables (which has the items before and after each write: dynalite_server.js, or
moto_patches/dynamodb_capacity.py, sends the units back in a response header that the AWS proxy
reads), SQS requests in the AWS proxy and the event source's poller,
WebSocket messages and connection time in the gateway, HTTP API requests in the HTTP API, Lambda
durations in the Runtime API (invocation handed out → response or error), Scheduler invocations
where a schedule fires. The control API serves the counters (`GET {control}/cost`) and resets
them (`DELETE {control}/cost`), so a tool reads what one phase of its run cost.

The unit arithmetic below is AWS's, from its documentation:
  * DynamoDB item size: attribute names and values in UTF-8 bytes; a number 1 byte per two
    significant digits plus 1; binary its raw bytes; null and Boolean 1 byte; a list or map 3
    bytes plus 1 byte per element; sets the sum of their elements. A write costs 1 write request
    unit per KB (rounded up) of the larger of the item before and after; a failed condition
    still costs the item's units. A read costs 1 read request unit per 4 KB (rounded up), half
    when eventually consistent; a Query sums the sizes of the items it read (before any filter)
    and rounds once. Batch operations count each item on its own; transactions twice.
  * SQS: each 64 KB chunk of a request's payload is one request (empty receives included).
  * API Gateway: a WebSocket message (either direction) per 32 KB; an HTTP API request per
    512 KB; connection minutes as the exact time connections were open.
  * Lambda: requests, and GB-seconds of the function's MemorySize over its duration rounded up
    to the millisecond (init included: Lambda bills it for custom runtimes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from .prices import AS_OF, price

KB = 1024
WRITE_UNIT_BYTES = KB
READ_UNIT_BYTES = 4 * KB
SQS_CHUNK_BYTES = 64 * KB
WS_MESSAGE_BYTES = 32 * KB
HTTP_REQUEST_BYTES = 512 * KB

# The response header in which a moto process reports the capacity a DynamoDB call consumed:
# "<read units> <write units> <table>".
CAPACITY_HEADER = "x-herald-capacity"


# --- unit arithmetic ---------------------------------------------------------------------------

def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def number_size(text: str) -> int:
    """A DynamoDB number's size: 1 byte per two significant digits (leading and trailing zeros
    trimmed), plus 1."""
    mantissa = text.lstrip("+-").lower().partition("e")[0]
    digits = mantissa.replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def binary_size(value: str | bytes) -> int:
    """Raw bytes of a binary value (the wire carries it in base64)."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return len(value.rstrip("=")) * 3 // 4


def value_size(value: Any) -> int:
    """Size of an attribute value: DynamoDB JSON (`{"S": "x"}`) or moto's DynamoType (`.type`,
    `.value`, nested values of the same kind), so moto's items are measured without copying."""
    if isinstance(value, dict):
        ((kind, inner),) = value.items()
    else:
        kind, inner = value.type, value.value
    if kind == "S":
        return utf8_len(inner)
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + utf8_len(k) + value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "SS":
        return sum(utf8_len(s) for s in inner)
    if kind == "NS":
        return sum(number_size(n) for n in inner)
    if kind == "BS":
        return sum(binary_size(b) for b in inner)
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(attributes: Mapping[str, Any] | None) -> int:
    """Bytes of an item (0 for none): attribute names plus values."""
    if not attributes:
        return 0
    return sum(utf8_len(name) + value_size(v) for name, v in attributes.items())


def write_units(size: int) -> int:
    """Write request units of one item write, `size` the larger of the item before and after."""
    return max(1, -(-size // WRITE_UNIT_BYTES))


def read_units(size: int, consistent: bool) -> float:
    """Read request units of one read of `size` bytes (an item, or a Query's summed items)."""
    units = max(1, -(-size // READ_UNIT_BYTES))
    return units if consistent else units / 2


def chunks(size: int, chunk: int) -> int:
    """Billed units of a payload metered in `chunk` increments (at least one)."""
    return max(1, -(-size // chunk))


def sqs_requests(payload_bytes: int) -> int:
    return chunks(payload_bytes, SQS_CHUNK_BYTES)


def ws_messages(payload_bytes: int) -> int:
    return chunks(payload_bytes, WS_MESSAGE_BYTES)


def http_requests(payload_bytes: int) -> int:
    return chunks(payload_bytes, HTTP_REQUEST_BYTES)


def gb_seconds(memory_mb: int, duration_ms: float) -> float:
    """GB-seconds of one invocation: duration rounded up to the millisecond."""
    return memory_mb / 1024 * math.ceil(duration_ms) / 1000


# --- the meter ---------------------------------------------------------------------------------

class Meter:
    """Counters of one stack; everything runs on the stack's event loop (no locks)."""

    def __init__(self) -> None:
        self._functions: dict[str, tuple[int, str]] = {}   # key -> (memory MB, architecture)
        self._open: dict[str, float] = {}                  # connection id -> counted since
        self.reset()

    def reset(self) -> None:
        self.since = time.time()
        self._since_monotonic = time.monotonic()
        self.dynamodb: dict[tuple[str, str], list[float]] = {}  # (table, op) -> calls, RRU, WRU
        self.sqs: dict[tuple[str, str], list[int]] = {}         # (op, by) -> calls, requests
        self.other_aws: dict[tuple[str, str], int] = {}         # (service, op) -> calls
        self.lambdas: dict[str, list[float]] = {}               # key -> invocations, ms, GB-s, init GB-s
        self.ws_in = self.ws_out = 0                            # messages (32 KB units)
        self.ws_frames_in = self.ws_frames_out = 0              # frames, whatever their size
        self.connection_seconds = 0.0                           # of connections closed since
        self.http_requests = 0
        self.scheduler_invocations = 0
        now = time.monotonic()
        self._open = dict.fromkeys(self._open, now)

    # --- recording (cheap: a dict lookup and a few additions) ---

    def function(self, key: str, memory_mb: int, architecture: str) -> None:
        self._functions[key] = (memory_mb, architecture)

    def dynamodb_call(self, operation: str, table: str, read: float, write: float) -> None:
        row = self.dynamodb.get((table, operation))
        if row is None:
            row = self.dynamodb[(table, operation)] = [0, 0.0, 0.0]
        row[0] += 1
        row[1] += read
        row[2] += write

    def sqs_call(self, operation: str, by: str, payload_bytes: int) -> None:
        row = self.sqs.get((operation, by))
        if row is None:
            row = self.sqs[(operation, by)] = [0, 0]
        row[0] += 1
        row[1] += sqs_requests(payload_bytes)

    def aws_call(self, service: str, operation: str) -> None:
        """A call of another service (Scheduler's API, S3, ...): counted, priced if billed."""
        self.other_aws[(service, operation)] = self.other_aws.get((service, operation), 0) + 1

    def invocation(self, function: str, duration_ms: float) -> None:
        memory_mb, _ = self._functions.get(function, (128, "x86_64"))
        row = self.lambdas.get(function)
        if row is None:
            row = self.lambdas[function] = [0, 0.0, 0.0, 0.0]
        row[0] += 1
        row[1] += math.ceil(duration_ms)
        row[2] += gb_seconds(memory_mb, duration_ms)

    def init(self, function: str, duration_ms: float) -> None:
        memory_mb, _ = self._functions.get(function, (128, "x86_64"))
        row = self.lambdas.get(function)
        if row is None:
            row = self.lambdas[function] = [0, 0.0, 0.0, 0.0]
        row[3] += gb_seconds(memory_mb, duration_ms)

    def frame_in(self, size: int) -> None:
        self.ws_frames_in += 1
        self.ws_in += ws_messages(size)

    def frame_out(self, size: int) -> None:
        self.ws_frames_out += 1
        self.ws_out += ws_messages(size)

    def connected(self, connection_id: str) -> None:
        self._open[connection_id] = time.monotonic()

    def disconnected(self, connection_id: str) -> None:
        start = self._open.pop(connection_id, None)
        if start is not None:
            self.connection_seconds += time.monotonic() - start

    def http_request(self, size: int) -> None:
        self.http_requests += http_requests(size)

    def schedule_fired(self) -> None:
        self.scheduler_invocations += 1

    # --- reading ---

    def snapshot(self) -> dict[str, Any]:
        """Usage since the last reset and its price, by service."""
        now = time.monotonic()
        connection_minutes = (self.connection_seconds
                              + sum(now - start for start in self._open.values())) / 60
        rru = sum(r[1] for r in self.dynamodb.values())
        wru = sum(r[2] for r in self.dynamodb.values())
        sqs = sum(r[1] for r in self.sqs.values())
        requests = sum(int(r[0]) for r in self.lambdas.values())
        lambda_compute = 0.0
        by_function = {}
        for key, (count, ms, gbs, init_gbs) in sorted(self.lambdas.items()):
            arch = self._functions.get(key, (128, "x86_64"))[1]
            lambda_compute += (gbs + init_gbs) * price(f"lambda.gb_second.{arch}")
            by_function[key] = {"invocations": int(count), "billedMs": int(ms),
                                "gbSeconds": round(gbs, 4), "initGbSeconds": round(init_gbs, 4),
                                "architecture": arch}
        s3_write = sum(n for (svc, op), n in self.other_aws.items()
                       if svc == "s3" and op in ("PUT", "POST", "COPY", "LIST"))
        s3_read = sum(n for (svc, _), n in self.other_aws.items() if svc == "s3") - s3_write
        messages = self.ws_in + self.ws_out
        dollars = {
            "dynamodb": rru * price("dynamodb.read_request_unit")
                        + wru * price("dynamodb.write_request_unit"),
            "sqs": sqs * price("sqs.request"),
            "apigateway": messages * price("apigateway.websocket_message")
                          + connection_minutes * price("apigateway.connection_minute")
                          + self.http_requests * price("apigateway.http_request"),
            "lambda": requests * price("lambda.request") + lambda_compute,
            "scheduler": self.scheduler_invocations * price("scheduler.invocation"),
            "s3": s3_write * price("s3.write_request") + s3_read * price("s3.read_request"),
        }
        dollars["total"] = sum(dollars.values())
        return {
            "since": self.since,
            "seconds": round(now - self._since_monotonic, 3),
            "pricesAsOf": AS_OF,
            "dollars": dollars,
            "usage": {
                "dynamodb": {
                    "readRequestUnits": rru, "writeRequestUnits": wru,
                    "byOperation": [{"table": t, "operation": op, "calls": int(c),
                                     "readRequestUnits": r, "writeRequestUnits": w}
                                    for (t, op), (c, r, w) in sorted(self.dynamodb.items())],
                },
                "sqs": {
                    "requests": sqs,
                    "byOperation": [{"operation": op, "by": by, "calls": c, "requests": n}
                                    for (op, by), (c, n) in sorted(self.sqs.items())],
                },
                "apigateway": {
                    "messagesIn": self.ws_in, "messagesOut": self.ws_out,
                    "framesIn": self.ws_frames_in, "framesOut": self.ws_frames_out,
                    "connectionMinutes": round(connection_minutes, 6),
                    "openConnections": len(self._open),
                    "httpRequests": self.http_requests,
                },
                "lambda": {"requests": requests, "byFunction": by_function},
                "scheduler": {"invocations": self.scheduler_invocations},
                "otherCalls": [{"service": s, "operation": op, "calls": n}
                               for (s, op), n in sorted(self.other_aws.items())],
            },
        }
