"""Injected failures (control API `faults`), for tests and demos.

Post faults make `@connections` answer an error instead of delivering; push faults make the
local Web Push service (pushservice.py) answer one; kill faults SIGKILL a
function process after it fetched a matching event (at once, or a random moment later: mid-
invocation); redelivery faults make an SQS event source leave a message it processed on the
queue, so SQS hands it out again (its at-least-once delivery); AWS faults make the AWS endpoint
proxy (awsproxy.py) answer a throttling error, delay a call, or answer a batch call with all of
it unprocessed (what DynamoDB does to a batch over its throughput: the caller must retry the
rest). All are consulted on hot paths,
so the common case (no fault configured) costs one truth test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# The error type API Gateway's management API puts in x-amzn-ErrorType for each status.
ERROR_TYPES = {
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "InternalServerErrorException")


@dataclass
class _CountedPostFault:
    connection_ids: frozenset[str] | None  # None: any connection
    status: int
    remaining: int
    location: str | None = None  # a push redirect's target (307/308)
    retry_after: int | None = None  # a push 429/503's Retry-After (seconds)


@dataclass
class _KillFault:
    function: str
    match: bytes
    remaining: int | None  # None: every matching invocation, with probability `rate`
    rate: float = 1.0
    after_ms: int = 0      # kill at a random moment within this many ms of the fetch


@dataclass
class _RedeliverFault:
    function: str
    rate: float


@dataclass
class AwsFault:
    """One rule of the AWS endpoint proxy. `target` is the call's X-Amz-Target (e.g.
    `DynamoDB_20120810.BatchWriteItem`, `AmazonSQS.SendMessage`) or a suffix of it (`PutItem`);
    `match` a substring the request body must contain (a table name)."""
    target: str
    match: bytes
    rate: float
    status: int | None = None       # answer this error instead of forwarding ...
    error_type: str = ""
    delay_ms: int = 0               # ... or forward after this delay ...
    unprocessed: bool = False       # ... or answer a batch call with none of it done
    remaining: int | None = None    # how many more calls it meets (None: no limit)
    injected: int = 0

    def applies(self, target: str, body: bytes) -> bool:
        return self.remaining != 0 and target.endswith(self.target) and self.match in body

    @property
    def kind(self) -> str:
        return "unprocessed" if self.unprocessed else "delay" if self.status is None else str(self.status)


class Faults:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._counted: list[_CountedPostFault] = []
        self._rates: list[tuple[float, int]] = []  # (share of posts, status)
        self._kills: list[_KillFault] = []
        self._redeliver: list[_RedeliverFault] = []
        self._push: list[_CountedPostFault] = []  # push service answers (by subscription id)
        self.aws: list[AwsFault] = []
        self._rng = rng or random.Random()
        # What was injected, by kind, for the control API (`GET faults`): chaos runs report it.
        self.counts: dict[str, int] = {}

    def add_post_fault(self, status: int, *, connection_ids: list[str] | None = None,
                       count: int | None = None, rate: float | None = None) -> None:
        if not 400 <= status <= 599:
            raise ValueError("status must be 4xx or 5xx")
        if rate is not None:
            if not 0 <= rate <= 1:
                raise ValueError("rate must be within [0, 1]")
            self._rates.append((rate, status))
        else:
            ids = frozenset(connection_ids) if connection_ids else None
            self._counted.append(_CountedPostFault(ids, status, count or 1))

    def add_push_fault(self, status: int, *, subscription_ids: list[str] | None = None,
                       count: int | None = None, location: str | None = None,
                       retry_after: int | None = None) -> None:
        """The local push service answers `status` to the next `count` pushes (to these
        subscriptions, or any): 404/410 (gone), 429 or 5xx (retry later), another 4xx, or a
        307/308 redirect to `location` (a sender must not follow it: SSRF). A 429 says
        `Retry-After: retry_after` (default 1)."""
        if status in (307, 308):
            if not location:
                raise ValueError("a redirect needs a location")
        elif not 400 <= status <= 599:
            raise ValueError("status must be 4xx or 5xx, or 307/308 with a location")
        ids = frozenset(subscription_ids) if subscription_ids else None
        if retry_after is not None and not 0 <= retry_after <= 3600:
            raise ValueError("retryAfter must be within 0..3600 seconds")
        self._push.append(_CountedPostFault(ids, status, count or 1, location, retry_after))

    def push_status(self, subscription_id: str) -> int | None:
        """The error status the next push to `subscription_id` must answer, if any."""
        fault = self.push_fault(subscription_id)
        return fault[0] if fault else None

    def push_fault(self, subscription_id: str) -> tuple[int, dict[str, str]] | None:
        """The status (and headers: a redirect's Location, a 429's Retry-After) the next push to
        `subscription_id` must answer."""
        for fault in self._push:
            if fault.connection_ids is None or subscription_id in fault.connection_ids:
                status = self._take_counted([fault], subscription_id, "push")
                if fault.remaining <= 0:
                    self._push.remove(fault)
                if status is None:
                    return None
                headers: dict[str, str] = {}
                if fault.location:
                    headers["Location"] = fault.location
                if status == 429:
                    headers["Retry-After"] = str(1 if fault.retry_after is None else fault.retry_after)
                return status, headers
        return None

    def add_kill_fault(self, function: str, match: str = "", count: int | None = 1, *,
                       rate: float | None = None, after_ms: int = 0) -> None:
        """`count` kills of matching invocations, or (with `rate`) that share of all of them."""
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be within [0, 1]")
        if after_ms < 0:
            raise ValueError("afterMs must not be negative")
        self._kills.append(_KillFault(function, match.encode(), None if rate is not None else count or 1,
                                      1.0 if rate is None else rate, after_ms))

    def add_redeliver_fault(self, function: str, rate: float) -> None:
        if not 0 <= rate <= 1:
            raise ValueError("rate must be within [0, 1]")
        self._redeliver.append(_RedeliverFault(function, rate))

    def add_aws_fault(self, target: str, *, match: str = "", rate: float = 1.0,
                      status: int | None = None, error_type: str = "", delay_ms: int = 0,
                      unprocessed: bool = False, count: int | None = None) -> None:
        if not target:
            raise ValueError("target (an X-Amz-Target such as DynamoDB_20120810.PutItem) is required")
        if not 0 <= rate <= 1:
            raise ValueError("rate must be within [0, 1]")
        if sum((status is not None, delay_ms > 0, unprocessed)) != 1:
            raise ValueError("an AWS fault needs one of: a status (an error to answer), delayMs, "
                             "or unprocessed")
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be 4xx or 5xx")
        if unprocessed and not target.endswith(("BatchGetItem", "BatchWriteItem")):
            raise ValueError("unprocessed applies to BatchGetItem and BatchWriteItem")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        self.aws.append(AwsFault(target, match.encode(), rate, status, error_type, delay_ms,
                                 unprocessed, count))

    def clear(self) -> None:
        self._counted.clear()
        self._kills.clear()
        self._redeliver.clear()
        self._push.clear()
        self.aws.clear()
        self._rates.clear()

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _take_counted(self, faults: list[_CountedPostFault], target: str, kind: str) -> int | None:
        """Uses up one of the first counted fault in `faults` that applies to `target` (a
        connection or a push subscription), counting it as `kind`: its status, if any."""
        for fault in faults:
            if fault.connection_ids is None or target in fault.connection_ids:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    faults.remove(fault)
                self.count(f"{kind}{fault.status}")
                return fault.status
        return None

    def post_status(self, connection_id: str) -> int | None:
        """The error status the next post to `connection_id` must answer, if any."""
        if not self._counted and not self._rates:
            return None
        status = self._take_counted(self._counted, connection_id, "post")
        if status is not None:
            return status
        for rate, status in self._rates:
            if self._rng.random() < rate:
                self.count(f"post{status}")
                return status
        return None

    def kill_delay(self, names: tuple[str, ...], payload: bytes) -> float | None:
        """Whether the invocation of the function known as `names` with `payload` dies: None if
        not, else after how many seconds (0: as soon as it fetched the event)."""
        if not self._kills:
            return None
        for fault in self._kills:
            if fault.function in names and fault.match in payload:
                if fault.remaining is None:
                    if self._rng.random() >= fault.rate:
                        continue
                else:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._kills.remove(fault)
                self.count("kill")
                return self._rng.uniform(0, fault.after_ms) / 1000 if fault.after_ms else 0.0
        return None

    def should_redeliver(self, names: tuple[str, ...]) -> bool:
        """Whether an event source leaves a message that `names` processed on its queue."""
        for fault in self._redeliver:
            if fault.function in names and self._rng.random() < fault.rate:
                self.count("redelivery")
                return True
        return False

    def aws_fault(self, target: str, body: bytes) -> AwsFault | None:
        """The AWS fault the call `target` with `body` meets, if any."""
        for fault in self.aws:
            if fault.applies(target, body) and self._rng.random() < fault.rate:
                fault.injected += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                self.count(f"aws:{fault.target}:{fault.kind}")
                return fault
        return None
