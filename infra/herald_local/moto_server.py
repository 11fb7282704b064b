"""moto's server, with DynamoDB's single-item atomicity.

DynamoDB applies a conditional write atomically: the condition is checked against the item as it
is when the write lands, so of two concurrent `UpdateItem ... ConditionExpression "c < :new"` at
most one sees the old value. moto serves requests on threads and checks, then writes, without a
lock: two concurrent conditional updates can both pass and both return the same old item (a lost
update). Herald builds on the atomic behaviour (rate budgets, presence sets, the latest entry of a
collapse key), so the local stack runs moto with DynamoDB's writes, and the reads that decide
them, serialized. Other services are untouched (SQS long polls must stay concurrent).

Two costs of moto that are not DynamoDB's are taken away (docs/reliability.md has the profile):
a Query on the table itself sorted every item of the table to pick one partition's (so every
read slowed down as the log grew: 30 % of moto's time in the full chaos run); it now reads the
partition it names, which moto keeps under its key anyway. And werkzeug logged every request
(11 %); only errors are logged.

Usage: python -m herald_local.moto_server -H HOST -p PORT   (the arguments of moto.server)
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from typing import Any, Callable

from moto.dynamodb.models.table import Table
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


# The partition the current thread's Query on a table (not an index) reads: (table, hash key).
_QUERY = threading.local()


def _partition_query(query: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(query)

    @functools.wraps(query)
    def scoped(self: Table, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs).arguments
        if bound.get("index_name") is not None or bound.get("hash_key") is None:
            return query(self, *args, **kwargs)
        _QUERY.scope = (self, bound["hash_key"])
        try:
            return query(self, *args, **kwargs)
        finally:
            _QUERY.scope = None
    return scoped


def _partition_items(all_items: Callable[[Table], list[Any]]) -> Callable[[Table], list[Any]]:
    """Inside such a Query, `all_items()` (which moto's Query then filters by hash key) is the
    one partition's items, in all_items' own order; elsewhere (Scan, index queries) all of them."""
    @functools.wraps(all_items)
    def items(self: Table) -> list[Any]:
        scope = getattr(_QUERY, "scope", None)
        if scope is None or scope[0] is not self:
            return all_items(self)
        bucket = self.items.get(scope[1])  # .get: the defaultdict must not grow an entry
        if bucket is None:
            return []
        if not self.range_key_attr:
            return [bucket]
        return sorted(bucket.values(), key=lambda item: item.range_key)
    return items


def patch() -> None:
    for name in _SERIALIZED:
        setattr(DynamoHandler, name, _serialized(getattr(DynamoHandler, name)))
    Table.query = _partition_query(Table.query)  # type: ignore[method-assign]
    Table.all_items = _partition_items(Table.all_items)  # type: ignore[method-assign]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


if __name__ == "__main__":
    patch()
    main()
