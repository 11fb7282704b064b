"""A Query on a table (not an index) reads the one partition it names, which moto keeps under its
hash key anyway, instead of sorting every item of the table to pick that partition's (a read
slowed down as the table grew: 30 % of moto's time in the full chaos run). The partition is
sorted on its range keys' native values (what moto's `DynamoType.__lt__` compares, without its
type tests) and a page starts at its exclusive start key by bisection, where moto compared every
earlier item to it on every page: paging through a 10,000-item partition in 1,000-item pages
took 11.2 s before, 2.0 s after (bench/moto_query.py). DynamoDB bills the items a Query reads
before its filter, so the filter and the projection are applied here after the capacity is
counted (dynamodb_capacity).

Test: test_dynamodb_backends.py::test_a_query_reads_its_partition_as_dynamodb_does.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import threading
from operator import itemgetter
from typing import Any, Callable

from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

from ..cost import item_size
from .dynamodb_capacity import UNITS

# The partition the current thread's Query on a table (not an index) reads: (table, hash key).
_QUERY = threading.local()


def _partition_query(query: Callable[..., Any]) -> Callable[..., Any]:
    """A Query on the table reads one partition (`_partition_items`), and adds the size of the
    items it read to the request's capacity (`UNITS`): DynamoDB bills the items a Query reads
    before its filter, whole whatever the projection, so moto's query runs without the two and
    they are applied here after, as its own last steps do."""
    signature = inspect.signature(query)

    @functools.wraps(query)
    def scoped(self: Table, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        arguments = bound.arguments
        if arguments.get("index_name") is not None or arguments.get("hash_key") is None:
            results, scanned, last_key = query(self, *args, **kwargs)
            UNITS.read_bytes = getattr(UNITS, "read_bytes", 0) + sum(item_size(r.attrs) for r in results)  # projected: a floor
            return results, scanned, last_key
        _QUERY.scope = (self, arguments["hash_key"], arguments.get("exclusive_start_key"),
                        arguments.get("scan_index_forward", True))
        filter_expression = arguments.pop("filter_expression", None)
        projection = arguments.pop("projection_expressions", None)
        arguments["projection_expressions"] = None
        try:
            results, scanned, last_key = query(*bound.args, **bound.kwargs)
        finally:
            _QUERY.scope = None
        UNITS.read_bytes = getattr(UNITS, "read_bytes", 0) + sum(item_size(r.attrs) for r in results)
        if filter_expression is not None:
            results = [item for item in results if filter_expression.expr(item)]
        if projection:
            results = [r.project(projection) for r in results]
        return results, scanned, last_key
    return scoped


def _partition_items(all_items: Callable[[Table], list[Any]]) -> Callable[[Table], list[Any]]:
    """Inside such a Query, `all_items()` (which moto's Query then filters by hash key) is the
    one partition's items in range-key order, from the page's exclusive start key on; elsewhere
    (Scan, index queries) all of them.

    The order is moto's own (`DynamoType.__lt__` compares `cast_value`), computed on the native
    values: sorting a 10,000-item partition through `__lt__` cost more than the rest of the
    Query. Starting after the start key is what moto's loop does too, but it gets there by
    comparing every earlier item to the key, through the same `__lt__`, on every page."""
    @functools.wraps(all_items)
    def items(self: Table) -> list[Any]:
        scope = getattr(_QUERY, "scope", None)
        if scope is None or scope[0] is not self:
            return all_items(self)
        _, hash_key, start_key, forward = scope
        bucket = self.items.get(hash_key)  # .get: the defaultdict must not grow an entry
        if bucket is None:
            return []
        if not self.range_key_attr:
            return [bucket]
        pairs = sorted(((_native(item.range_key), item) for item in bucket.values()), key=itemgetter(0))
        ordered = [item for _, item in pairs]
        start = (start_key or {}).get(self.range_key_attr)
        if start is None:
            return ordered
        keys = [key for key, _ in pairs]
        after = _native(DynamoType(start))
        if forward:
            return ordered[bisect.bisect_right(keys, after):]
        return ordered[:bisect.bisect_left(keys, after)]
    return items


def _native(value: DynamoType) -> Any:
    """`value.cast_value` (what moto's `__lt__` compares), without its type tests for the
    common string key."""
    return value.value if value.type == "S" else value.cast_value



def apply() -> None:
    Table.query = _partition_query(Table.query)  # type: ignore[method-assign]
    Table.all_items = _partition_items(Table.all_items)  # type: ignore[method-assign]
