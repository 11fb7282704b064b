"""moto's server, with DynamoDB's single-item atomicity.

DynamoDB applies a conditional write atomically: the condition is checked against the item as it
is when the write lands, so of two concurrent `UpdateItem ... ConditionExpression "c < :new"` at
most one sees the old value. moto serves requests on threads and checks, then writes, without a
lock: two concurrent conditional updates can both pass and both return the same old item (a lost
update). Herald builds on the atomic behaviour (rate budgets, presence sets, the latest entry of a
collapse key), so the local stack runs moto with DynamoDB's writes, and the reads that decide
them, serialized. Other services are untouched (SQS long polls must stay concurrent).

Usage: python -m herald_local.moto_server -H HOST -p PORT   (the arguments of moto.server)
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_LOCK = threading.RLock()
# Every DynamoDB operation that writes, and GetItem (a consistent read must not see half a
# write), as whole requests: moto's handler reads the old item (for the condition and for
# ReturnValues) before it writes, so locking only the write would still hand two writers the
# same old item.
_SERIALIZED = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item", "get_item")


def _serialized(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return fn(*args, **kwargs)
    return locked


def patch() -> None:
    for name in _SERIALIZED:
        setattr(DynamoHandler, name, _serialized(getattr(DynamoHandler, name)))


if __name__ == "__main__":
    patch()
    main()
