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
grew with the square of the backlog), and every request listed moto's package directory. The
10,000-client broadcast (docs/performance.md) found the last two: moto's generic response
serializer walking every attribute of every item of a Query page, and a partition sorted (and
every earlier page skipped) through `DynamoType.__lt__` on every page; item answers are now
`json.dumps` of moto's wire-format dicts, and a partition is sorted on its keys' native values
(paging through 10,000 items: 11.2 s before, 2.0 s after).
(Keeping connections open, which werkzeug does not, was tried and taken out: with it the chaos
check lost notifications on one device in 2 of 6 runs, without it in none. That loss was later
found to be Herald's — a 410 during `$connect` taken as "gone", which faster runs made likelier;
docs/reliability.md — so kept connections may come back.)
The full chaos run's profile, with 200 clients reconnecting every few seconds, found two more
costs per request: werkzeug's threaded server starts a thread for every connection (and every
answer closes its connection), and its accept loop waits until each new thread runs, which on a
moto whose threads all wait for one GIL held back the next accept; and moto lists the methods of
the handler class, through `inspect.getmembers`, on every request (6 % of moto's CPU). So moto's
app is served here by werkzeug's server with request threads kept for reuse, and the method
names are computed once per class (a 1,000-notification chaos run: SQS SendMessageBatch 255 ms
→ 118 ms on average, the sends done at 98 s instead of 112 s).

Usage: python -m herald_local.moto_server -H HOST -p PORT[,PORT...]   (one process per port)
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import functools
import inspect
import logging
import os
import queue
import signal
import socketserver
import threading
import time
from operator import itemgetter
from typing import Any, Callable

from moto import backends
from moto.core import responses as moto_responses
from moto.core import utils as moto_utils
from moto.core.responses import ActionResult
from moto.dynamodb import responses as dynamo_responses
from moto.dynamodb.exceptions import ConditionalCheckFailed, TransactionCanceledException
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs import models as sqs_models
from moto.sqs.models import SQSBackend
from werkzeug.serving import BaseWSGIServer

from .cost import CAPACITY_HEADER, item_size, read_units, write_units

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
    """A Query on the table reads one partition (`_partition_items`), and adds the size of the
    items it read to the request's capacity (`_UNITS`): DynamoDB bills the items a Query reads
    before its filter, whole whatever the projection, so moto's query runs without the two and
    they are applied here after, as its own last steps do."""
    signature = inspect.signature(query)

    @functools.wraps(query)
    def scoped(self: Table, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        arguments = bound.arguments
        if arguments.get("index_name") is not None or arguments.get("hash_key") is None:
            results, scanned, last_key = query(self, *args, **kwargs)
            _UNITS.read_bytes = getattr(_UNITS, "read_bytes", 0) + sum(item_size(r.attrs) for r in results)  # projected: a floor
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
        _UNITS.read_bytes = getattr(_UNITS, "read_bytes", 0) + sum(item_size(r.attrs) for r in results)
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


class _PlainJsonResult(ActionResult):
    """An item operation's answer written as DynamoDB's JSON protocol writes it: moto's own
    wire-format dicts through `json.dumps`. moto's generic serializer walks the operation's
    output shape attribute by attribute in Python; for a Query page of 1,000 memberships that
    was 58 % of moto's DynamoDB time during a big broadcast (docs/performance.md). Headers
    the handler adds (the CRC32, the request id) are added by moto as before."""

    def execute_result(self, context: Any) -> tuple[int, dict[str, Any], str]:
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, dynamo_json_dump(self.result)


# The operations whose answer is items (and counts, keys, consumed capacity): their results
# are plain data. Table descriptions and the rest keep moto's serializer, which picks
# attributes out of model objects and formats timestamps.
_ITEM_OPERATIONS = ("get_item", "put_item", "update_item", "delete_item", "query", "scan",
                    "batch_get_item", "batch_write_item", "transact_get_items", "transact_write_items")
_PLAIN = threading.local()
_DynamoResult = dynamo_responses.DynamoResult


def _dynamo_result(result: Any) -> ActionResult:
    if getattr(_PLAIN, "on", False):
        return _PlainJsonResult(result)
    return _DynamoResult(result)


def _plain_json(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        _PLAIN.on = True
        try:
            return fn(*args, **kwargs)
        finally:
            _PLAIN.on = False
    return plain


# --- the cost meter's DynamoDB capacity (cost.py) ------------------------------------------
# Each item operation adds the read and write request units it consumed to `_UNITS` (the
# request's thread), computed from the stored items before and after it, which only moto holds
# (an UpdateItem's request says neither size); `_with_capacity` reports them in a response
# header, which the AWS proxy counts and takes off.
_UNITS = threading.local()


def _reset_units() -> None:
    _UNITS.read, _UNITS.write, _UNITS.read_bytes, _UNITS.table = 0.0, 0, 0, ""


def _with_capacity(call_action: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call_action)
    def reported(self: DynamoHandler) -> Any:
        _reset_units()
        status, headers, body = call_action(self)
        if _UNITS.read or _UNITS.write:
            headers[CAPACITY_HEADER] = f"{_UNITS.read:g} {_UNITS.write} {_UNITS.table}"
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
        _UNITS.table = targets[0][0] if targets else ""
        try:
            result = fn(self)
        except (ConditionalCheckFailed, TransactionCanceledException):
            _UNITS.write += sum(f * write_units(b) for (_, _, _, f), b in zip(targets, before))
            raise
        _UNITS.write += sum(f * write_units(max(b, _stored_size(table, key)))
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
                _UNITS.read += sum(read_units(_stored_size(table, key), consistent)
                                   for key in spec.get("Keys") or [])
                _UNITS.table = _UNITS.table or name
            return result
        if operation == "transact_get_items":
            for entry in body.get("TransactItems") or []:
                get = entry.get("Get") or {}
                size = _stored_size(_table(self, get.get("TableName")), get.get("Key") or {})
                _UNITS.read += 2 * read_units(size, True)
                _UNITS.table = _UNITS.table or get.get("TableName") or ""
            return result
        consistent = bool(body.get("ConsistentRead"))
        if operation == "get_item":
            size = _stored_size(_table(self, body.get("TableName")), body.get("Key") or {})
        elif operation == "query":
            size = _UNITS.read_bytes
        else:   # scan
            size = sum(item_size(i) for i in (getattr(result, "result", None) or {}).get("Items") or [])
        _UNITS.read += read_units(size, consistent)
        _UNITS.table = body.get("TableName") or ""
        return result
    return metered


_METERED_WRITES = ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items")
_METERED_READS = ("get_item", "batch_get_item", "transact_get_items", "query", "scan")


def _unix_time(dt: Any = None) -> float:
    return time.time() if dt is None else moto_utils.unix_time(dt)


def _retention_from_queue(self: SQSBackend, queue_name: str, message: Any) -> bool:
    """moto's own check computes every attribute of the queue (each approximate count walks all
    its messages) to read one number, for each message a receive returns: a receive cost grew
    with the square of the backlog. Same rule, from the queue's field."""
    retain_until = self.get_queue(queue_name).message_retention_period + message.sent_timestamp / 1000
    return retain_until > time.time()


def _under_queue_lock(delete: Callable[..., None]) -> Callable[..., None]:
    """moto's `Queue.delete_message` builds the queue's message list anew and puts it in place,
    without the lock `add_message` appends under: a message sent meanwhile went into the old
    list and was lost, though SendMessage had answered (the full chaos run lost whole dispatch
    batches, never processed, never dead-lettered; test_moto_atomic.py). Deletes take the lock."""
    @functools.wraps(delete)
    def locked(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)
    return locked


def patch() -> None:
    dynamo_responses.DynamoResult = _dynamo_result  # type: ignore[assignment,misc]
    for name in _ITEM_OPERATIONS:
        setattr(DynamoHandler, name, _plain_json(getattr(DynamoHandler, name)))
    # Metered inside the lock (below): the sizes before and after must be of one write.
    for name in _METERED_WRITES:
        setattr(DynamoHandler, name, _metered_write(name, getattr(DynamoHandler, name)))
    for name in _METERED_READS:
        setattr(DynamoHandler, name, _metered_read(name, getattr(DynamoHandler, name)))
    DynamoHandler.call_action = _with_capacity(DynamoHandler.call_action)  # type: ignore[method-assign]
    for name in _SERIALIZED:
        setattr(DynamoHandler, name, _serialized(getattr(DynamoHandler, name)))
    Table.query = _partition_query(Table.query)  # type: ignore[method-assign]
    Table.all_items = _partition_items(Table.all_items)  # type: ignore[method-assign]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    SQSBackend.is_message_valid_based_on_retention_period = _retention_from_queue  # type: ignore[method-assign]
    sqs_models.Queue.delete_message = _under_queue_lock(sqs_models.Queue.delete_message)  # type: ignore[method-assign]
    # SQS asks the time through datetime arithmetic for every message it looks at (is it
    # visible? delayed?), and the approximate counts that every SendMessage computes look at all
    # of them: the same number from the clock directly.
    sqs_models.unix_time = _unix_time  # type: ignore[attr-defined]
    sqs_models.unix_time_millis = lambda dt=None: _unix_time(dt) * 1000.0  # type: ignore[attr-defined]
    # moto lists its package directory (a listdir and a few hundred isdir calls) on every
    # request to tell a backend's name from a host; the package does not change while it runs.
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    # Which methods a handler class has, asked on every request to check the action's name; the
    # classes do not change once patched (above).
    moto_responses.method_names_from_class = functools.cache(_method_names)  # type: ignore[attr-defined]


def _method_names(cls: type) -> frozenset[str]:
    return frozenset(name for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction))


class _PooledServer(socketserver.ThreadingMixIn, BaseWSGIServer):
    """werkzeug's threaded server (what moto runs), whose request threads are reused.

    A request goes to an idle thread when there is one, else to a new one, so the pool grows to
    the most requests ever in flight at once and no further; none waits for a free thread (an
    SQS long poll holds its thread for up to 20 s). Threads are daemons, as werkzeug's are: the
    process exits without waiting for a long poll."""

    multithread = True
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requests: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one token per thread waiting for a request

    def process_request(self, request: Any, client_address: Any) -> None:
        self._requests.put((request, client_address))
        if not self._idle.acquire(blocking=False):
            threading.Thread(target=self._work, name="moto-request", daemon=True).start()

    def _work(self) -> None:
        while True:
            request, client_address = self._requests.get()
            # finish_request, shutdown_request and error handling, as on a thread of its own.
            self.process_request_thread(request, client_address)
            self._idle.release()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m herald_local.moto_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", required=True,
                        help="a port, or several separated by commas: one moto process each")
    args = parser.parse_args()
    try:
        ports = [int(p) for p in args.port.split(",")]
    except ValueError:
        parser.error(f"--port: not a list of port numbers: {args.port}")
    # moto builds some URLs from it (an SQS queue's), as under `moto_server`: the first port's
    # process is the one that serves every service (aws.py routes only tables elsewhere).
    os.environ.setdefault("MOTO_PORT", str(ports[0]))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    patch()
    # Every further port gets a copy of this process, forked once moto is imported and patched:
    # a second process of its own would spend the same ~1.8 s of CPU on imports, and a test run
    # starts dozens of stacks. Nothing runs a thread yet, so the fork is safe. Each copy dies
    # with its parent (the stack kills this process's group, but a SIGKILL of this process alone
    # must not leave copies serving).
    parent = os.getpid()
    for port in ports[1:]:
        if os.fork() == 0:
            _die_with(parent)
            _serve(args.host, port)
    _serve(args.host, ports[0])


def _die_with(parent: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the prctl
        os._exit(0)


def _serve(host: str, port: int) -> None:
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]  # as moto.server sets it
    # serve_forever ends quietly on Ctrl-C (werkzeug's catches KeyboardInterrupt).
    _PooledServer(host, port, app, handler=MotoRequestHandler).serve_forever()
    os._exit(0)


if __name__ == "__main__":
    main()
