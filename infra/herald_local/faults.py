"""Injected failures (control API `faults`), for tests and demos.

Post faults make `@connections` answer an error instead of delivering; kill faults SIGKILL a
function process right after it fetched a matching event. Both are consulted on hot paths, so
the common case (no fault configured) costs one truth test.
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


@dataclass
class _KillFault:
    function: str
    match: bytes
    remaining: int


class Faults:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._counted: list[_CountedPostFault] = []
        self._rate: tuple[float, int] | None = None
        self._kills: list[_KillFault] = []
        self._rng = rng or random.Random()

    def add_post_fault(self, status: int, *, connection_ids: list[str] | None = None,
                       count: int | None = None, rate: float | None = None) -> None:
        if not 400 <= status <= 599:
            raise ValueError("status must be 4xx or 5xx")
        if rate is not None:
            if not 0 <= rate <= 1:
                raise ValueError("rate must be within [0, 1]")
            self._rate = (rate, status)
        else:
            ids = frozenset(connection_ids) if connection_ids else None
            self._counted.append(_CountedPostFault(ids, status, count or 1))

    def add_kill_fault(self, function: str, match: str = "", count: int = 1) -> None:
        self._kills.append(_KillFault(function, match.encode(), count))

    def clear(self) -> None:
        self._counted.clear()
        self._kills.clear()
        self._rate = None

    def post_status(self, connection_id: str) -> int | None:
        """The error status the next post to `connection_id` must answer, if any."""
        if not self._counted and self._rate is None:
            return None
        for fault in self._counted:
            if fault.connection_ids is None or connection_id in fault.connection_ids:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._counted.remove(fault)
                return fault.status
        if self._rate is not None and self._rng.random() < self._rate[0]:
            return self._rate[1]
        return None

    def should_kill(self, names: tuple[str, ...], payload: bytes) -> bool:
        """Whether the invocation of the function known as `names` with `payload` dies now."""
        if not self._kills:
            return False
        for fault in self._kills:
            if fault.function in names and fault.match in payload:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._kills.remove(fault)
                return True
        return False
