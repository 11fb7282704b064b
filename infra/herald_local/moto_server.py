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
(11 %); only errors are logged. Two more came out of the next profile: an SQS receive computed
every attribute of the queue, walking all its messages, for each message it returned (a cost that
grew with the square of the backlog), and every request listed moto's package directory.
(Keeping connections open, which werkzeug does not, was tried and taken out: with it the chaos
check lost notifications on one device in 2 of 6 runs, without it in none; docs/reliability.md.)

Usage: python -m herald_local.moto_server -H HOST -p PORT   (the arguments of moto.server)
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from typing import Any, Callable

from moto import backends
from moto import server as moto_server
from moto.core import utils as moto_utils
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.sqs import models as sqs_models
from moto.sqs.models import SQSBackend

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


def _unix_time(dt: Any = None) -> float:
    return time.time() if dt is None else moto_utils.unix_time(dt)


def _retention_from_queue(self: SQSBackend, queue_name: str, message: Any) -> bool:
    """moto's own check computes every attribute of the queue (each approximate count walks all
    its messages) to read one number, for each message a receive returns: a receive cost grew
    with the square of the backlog. Same rule, from the queue's field."""
    retain_until = self.get_queue(queue_name).message_retention_period + message.sent_timestamp / 1000
    return retain_until > time.time()


def patch() -> None:
    for name in _SERIALIZED:
        setattr(DynamoHandler, name, _serialized(getattr(DynamoHandler, name)))
    Table.query = _partition_query(Table.query)  # type: ignore[method-assign]
    Table.all_items = _partition_items(Table.all_items)  # type: ignore[method-assign]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    SQSBackend.is_message_valid_based_on_retention_period = _retention_from_queue  # type: ignore[method-assign]
    # SQS asks the time through datetime arithmetic for every message it looks at (is it
    # visible? delayed?), and the approximate counts that every SendMessage computes look at all
    # of them: the same number from the clock directly.
    sqs_models.unix_time = _unix_time  # type: ignore[attr-defined]
    sqs_models.unix_time_millis = lambda dt=None: _unix_time(dt) * 1000.0  # type: ignore[attr-defined]
    # moto lists its package directory (a listdir and a few hundred isdir calls) on every
    # request to tell a backend's name from a host; the package does not change while it runs.
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]


if __name__ == "__main__":
    patch()
    moto_server.main()
