"""DynamoDB applies a conditional write atomically: the condition is checked against the item as
it is when the write lands, so of two concurrent `UpdateItem ... ConditionExpression "c < :new"`
at most one sees the old value. moto serves requests on threads and checks, then writes, without
a lock: two concurrent conditional updates could both pass and both return the same old item (a
lost update; 15 of ~130 in the test). Every write operation, and GetItem (a consistent read must
not see half a write), runs whole under one lock: moto's handler reads the old item (for the
condition and ReturnValues) before it writes, so locking only the write would not do.

Test: test_dynamodb_backends.py::test_concurrent_conditional_updates_never_share_an_old_item.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from moto.dynamodb.responses import DynamoHandler

LOCK = threading.RLock()
SERIALIZED = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item", "get_item")


def serialized(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with LOCK:
            return fn(*args, **kwargs)
    return locked


def apply() -> None:
    for name in SERIALIZED:
        setattr(DynamoHandler, name, serialized(getattr(DynamoHandler, name)))
