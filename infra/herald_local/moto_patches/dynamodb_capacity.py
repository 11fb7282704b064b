"""The cost meter's DynamoDB capacity (cost.py): each item operation adds the read and write
request units it consumed, computed from the stored items before and after it, which only the
back-end holds (an UpdateItem's request says neither size), and reports them in a response
header that the stack's AWS proxy counts and takes off. A write whose condition failed still
consumes the stored item's units, as on DynamoDB.

Test: test_cost.py::test_a_known_sequence_of_dynamodb_calls (with --dynamodb moto, in
test_dynamodb_backends.py).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from moto.dynamodb.exceptions import ConditionalCheckFailed, TransactionCanceledException
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler

from ..cost import CAPACITY_HEADER, item_size, read_units, write_units

# Each item operation adds the read and write request units it consumed to `UNITS` (the
# request's thread), computed from the stored items before and after it, which only moto holds
# (an UpdateItem's request says neither size); `_with_capacity` reports them in a response
# header, which the AWS proxy counts and takes off.
UNITS = threading.local()


def _reset_units() -> None:
    UNITS.read, UNITS.write, UNITS.read_bytes, UNITS.table = 0.0, 0, 0, ""


def _with_capacity(call_action: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call_action)
    def reported(self: DynamoHandler) -> Any:
        _reset_units()
        status, headers, body = call_action(self)
        if UNITS.read or UNITS.write:
            headers[CAPACITY_HEADER] = f"{UNITS.read:g} {UNITS.write} {UNITS.table}"
        return status, headers, body
    return reported


def _table(handler: DynamoHandler, name: Any) -> Table | None:
    try:
        return handler.dynamodb_backend.get_table(name)
    except Exception:   # noqa: BLE001 - the operation itself reports the unknown table
        return None


def _stored_size(table: Table | None, key: dict[str, Any]) -> int:
    """Size of the item stored under `key` (an item or a key, DynamoDB JSON); 0 if none."""
    if table is None or not isinstance(key, dict) or table.hash_key_attr not in key:
        return 0
    bucket = table.items.get(DynamoType(key[table.hash_key_attr]))  # .get: a defaultdict
    if bucket is not None and table.range_key_attr:
        range_key = key.get(table.range_key_attr)
        bucket = None if range_key is None else bucket.get(DynamoType(range_key))
    return item_size(bucket.attrs) if bucket is not None else 0


def _writes(operation: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    """(table, item or key, unit factor) of each item a write operation writes."""
    if operation in ("put_item",):
        return [(body.get("TableName"), body.get("Item") or {}, 1)]
    if operation in ("update_item", "delete_item"):
        return [(body.get("TableName"), body.get("Key") or {}, 1)]
    if operation == "batch_write_item":
        return [(name, r["PutRequest"]["Item"] if "PutRequest" in r else r["DeleteRequest"]["Key"], 1)
                for name, requests in (body.get("RequestItems") or {}).items() for r in requests]
    out = []   # transact_write_items: every action, a condition check too, at twice the units
    for entry in body.get("TransactItems") or []:
        for kind, action in entry.items():
            out.append((action.get("TableName"), action.get("Item" if kind == "Put" else "Key") or {}, 2))
    return out


def _metered_write(operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Write request units of the larger of each item before and after; a write whose condition
    failed (a cancelled transaction too) still consumes the stored item's units."""
    @functools.wraps(fn)
    def metered(self: DynamoHandler) -> Any:
        targets = [(name, _table(self, name), key, factor)
                   for name, key, factor in _writes(operation, self.body)]
        before = [_stored_size(table, key) for _, table, key, _ in targets]
        UNITS.table = targets[0][0] if targets else ""
        try:
            result = fn(self)
        except (ConditionalCheckFailed, TransactionCanceledException):
            UNITS.write += sum(f * write_units(b) for (_, _, _, f), b in zip(targets, before))
            raise
        UNITS.write += sum(f * write_units(max(b, _stored_size(table, key)))
                            for (_, table, key, f), b in zip(targets, before))
        return result
    return metered


def _metered_read(operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Read request units: per item for GetItem, BatchGetItem and TransactGetItems (twice, and
    strongly consistent); once on the summed item sizes for Query (`_partition_query`) and
    Scan (the items it returns: a floor, Herald scans nothing)."""
    @functools.wraps(fn)
    def metered(self: DynamoHandler) -> Any:
        body = self.body
        result = fn(self)
        if operation == "batch_get_item":
            for name, spec in (body.get("RequestItems") or {}).items():
                table, consistent = _table(self, name), bool(spec.get("ConsistentRead"))
                UNITS.read += sum(read_units(_stored_size(table, key), consistent)
                                   for key in spec.get("Keys") or [])
                UNITS.table = UNITS.table or name
            return result
        if operation == "transact_get_items":
            for entry in body.get("TransactItems") or []:
                get = entry.get("Get") or {}
                size = _stored_size(_table(self, get.get("TableName")), get.get("Key") or {})
                UNITS.read += 2 * read_units(size, True)
                UNITS.table = UNITS.table or get.get("TableName") or ""
            return result
        consistent = bool(body.get("ConsistentRead"))
        if operation == "get_item":
            size = _stored_size(_table(self, body.get("TableName")), body.get("Key") or {})
        elif operation == "query":
            size = UNITS.read_bytes
        else:   # scan
            size = sum(item_size(i) for i in (getattr(result, "result", None) or {}).get("Items") or [])
        UNITS.read += read_units(size, consistent)
        UNITS.table = body.get("TableName") or ""
        return result
    return metered


_METERED_WRITES = ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items")
_METERED_READS = ("get_item", "batch_get_item", "transact_get_items", "query", "scan")




def apply() -> None:
    # Metered inside the lock (dynamodb_atomic, applied after): the sizes before and after must
    # be of one write.
    for name in _METERED_WRITES:
        setattr(DynamoHandler, name, _metered_write(name, getattr(DynamoHandler, name)))
    for name in _METERED_READS:
        setattr(DynamoHandler, name, _metered_read(name, getattr(DynamoHandler, name)))
    DynamoHandler.call_action = _with_capacity(DynamoHandler.call_action)  # type: ignore[method-assign]
