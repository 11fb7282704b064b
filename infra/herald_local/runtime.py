"""Lambda Runtime API and the process pool behind each function.

Every function instance is a real process (the Rust binary, or a test fake) with its own
`AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT`. All instances share one aiohttp application; the local
port a request arrived on tells which instance is asking. An instance is sent an invocation only
while it waits in `GET /next`, and handles one at a time, as on Lambda. A pool keeps one warm
instance and adds more (up to `max_instances`, MAX_INSTANCES unless the stack says otherwise)
while invocations queue up.

Failures follow Lambda: a timeout kills the process and fails the invocation with
`Sandbox.Timedout`; a process that dies mid-invocation fails it with `Runtime.ExitError`; a
process that dies during init fails what is queued (no instance can take it) and is retried, with
backoff, only when there is work for it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import math
import secrets
import zlib
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from . import procs
from .cost import Meter
from .faults import Faults
from .functions import FunctionSpec

log = logging.getLogger("herald_local")

# Lambda scales a function out per concurrent invocation; here each instance is a process on the
# developer's machine, so a pool stops at a few (`herald-local --max-instances` changes it). More
# is not always faster: every instance waits on the same moto (docs/reliability.md).
MAX_INSTANCES = 4
BACKLOG = 4096   # listen backlog of an instance's Runtime API port (see stack.BACKLOG)
MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # Lambda's synchronous response limit
_PREFIX = "/2018-06-01/runtime"


class FunctionError(Exception):
    """An invocation that did not produce a response. `payload` is what Lambda's Invoke API
    would return: the runtime's error document, or one made up for platform errors."""

    def __init__(self, error_type: str, message: str, payload: bytes | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.payload = payload or json.dumps(
            {"errorType": error_type, "errorMessage": message}).encode()


@dataclass(eq=False)
class Invocation:
    request_id: str
    payload: bytes
    future: asyncio.Future[bytes]
    source: str | None = None   # who it is for (a WebSocket connection): see FairQueue
    fetched_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    doomed: bool = False   # a kill fault hit it: whatever the process answers, it dies first
    lineage: int = 0       # hops of this request chain so far (Lambda's recursive loop detection)
    started: asyncio.Future[None] | None = None  # set when an instance takes it (see invoke)


@dataclass(eq=False)
class Instance:
    number: int
    started_at: float
    port: int = 0
    site: web.SockSite | None = None
    proc: asyncio.subprocess.Process | None = None
    init_ms: float | None = None     # set when it first asks for work
    init_reported: bool = False      # REPORT shows Init Duration once
    init_error: str | None = None    # from POST /runtime/init/error
    killed: bool = False             # we ended it (timeout, fault, init error, shutdown)
    current: Invocation | None = None
    waiter: asyncio.Future[Invocation | None] | None = None  # set while parked in GET /next
    supervisor: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return self.waiter is not None and not self.waiter.done()


class RuntimeApi:
    """The aiohttp application serving every instance's Runtime API."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._owners: dict[int, tuple[FunctionPool, Instance]] = {}
        app = web.Application(client_max_size=MAX_RESPONSE_BYTES + 1024)
        app.router.add_get(_PREFIX + "/invocation/next", self._next)
        app.router.add_post(_PREFIX + "/invocation/{request_id}/response", self._response)
        app.router.add_post(_PREFIX + "/invocation/{request_id}/error", self._error)
        app.router.add_post(_PREFIX + "/init/error", self._init_error)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)

    async def start(self) -> None:
        await self._runner.setup()

    async def close(self) -> None:
        await self._runner.cleanup()

    async def open(self, pool: FunctionPool, inst: Instance) -> None:
        """Give `inst` its own listening port."""
        sock = socket.socket()
        sock.bind((self.host, 0))
        inst.port = sock.getsockname()[1]
        inst.site = web.SockSite(self._runner, sock, backlog=BACKLOG)
        await inst.site.start()
        self._owners[inst.port] = (pool, inst)

    async def release(self, inst: Instance) -> None:
        self._owners.pop(inst.port, None)
        if inst.site is not None:
            await inst.site.stop()

    def _owner(self, request: web.Request) -> tuple[FunctionPool, Instance]:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        try:
            return self._owners[port]
        except KeyError:
            raise web.HTTPGone(text="instance retired") from None

    async def _next(self, request: web.Request) -> web.StreamResponse:
        pool, inst = self._owner(request)
        return await pool.next_invocation(request, inst)

    async def _response(self, request: web.Request) -> web.Response:
        pool, inst = self._owner(request)
        inv = pool.current(inst, request.match_info["request_id"])
        body = await request.read()
        if len(body) > MAX_RESPONSE_BYTES:
            pool.finish(inst, inv, error=FunctionError(
                "Function.ResponseSizeTooLarge",
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload "
                f"size ({MAX_RESPONSE_BYTES} bytes)."), status="error")
            return web.json_response({"errorType": "RequestEntityTooLarge"}, status=413)
        pool.finish(inst, inv, result=body)
        return web.json_response({"status": "OK"}, status=202)

    async def _error(self, request: web.Request) -> web.Response:
        pool, inst = self._owner(request)
        inv = pool.current(inst, request.match_info["request_id"])
        body = await request.read()
        error_type, message = _parse_error(body, request.headers)
        pool.finish(inst, inv, error=FunctionError(error_type, message, body), status="error")
        return web.json_response({"status": "OK"}, status=202)

    async def _init_error(self, request: web.Request) -> web.Response:
        pool, inst = self._owner(request)
        error_type, message = _parse_error(await request.read(), request.headers)
        inst.init_error = f"{error_type}: {message}"
        # Lambda tears the sandbox down after an init error; the exit watcher does the rest.
        pool.kill(inst)
        return web.json_response({"status": "OK"}, status=202)


def _parse_error(body: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    error_type = headers.get("Lambda-Runtime-Function-Error-Type", "")
    message = body.decode("utf-8", "replace")
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            error_type = str(doc.get("errorType") or error_type)
            message = str(doc.get("errorMessage", message))
    except ValueError:
        pass
    return error_type or "Unhandled", message


class FairQueue:
    """Queued invocations, taken round-robin across their sources (FIFO within one).

    Lambda scales out per invocation, so on AWS one WebSocket connection's flood of frames does
    not hold back another connection's frame. A pool here has a few instances at most; a plain
    FIFO would queue every other caller behind the flood, which is this emulator's limit, not
    the system's. Invocations without a source share one lane.
    """

    def __init__(self) -> None:
        self._lanes: dict[str | None, collections.deque[Invocation]] = {}
        self._order: collections.deque[str | None] = collections.deque()

    def append(self, inv: Invocation) -> None:
        lane = self._lanes.get(inv.source)
        if lane is None:
            lane = self._lanes[inv.source] = collections.deque()
            self._order.append(inv.source)
        lane.append(inv)

    def popleft(self) -> Invocation:
        source = self._order.popleft()
        lane = self._lanes[source]
        inv = lane.popleft()
        if lane:
            self._order.append(source)
        else:
            del self._lanes[source]
        return inv

    def __bool__(self) -> bool:
        return bool(self._order)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for lane in self._lanes.values():
            yield from lane


class FunctionPool:
    """The instances of one function and the invocations queued for them."""

    def __init__(self, spec: FunctionSpec, runtime: RuntimeApi, faults: Faults, *,
                 cwd: str, report: bool, max_instances: int = MAX_INSTANCES,
                 meter: Meter | None = None) -> None:
        self.spec = spec
        self._meter = meter   # cost.py: each invocation's duration, each instance's init
        self._max_instances = max_instances
        self._runtime = runtime
        self.faults = faults  # also read by the function's event sources
        self._cwd = cwd
        self._report = report
        self.names = (spec.key, spec.logical_id, spec.name)
        self.lineage_hash = lineage_hash(spec.arn)
        self._instances: list[Instance] = []
        self._pending = FairQueue()
        self._idle: collections.deque[Instance] = collections.deque()
        self._numbers = itertools.count(1)
        self._warm = True             # keep one instance even without work
        self._init_failures = 0
        self._backoff_until = 0.0
        self._backoff_timer: asyncio.TimerHandle | None = None
        self._settled = asyncio.Event()  # first start finished: initialized or failed
        self._closing = False

    # --- callers ------------------------------------------------------------------------

    def start(self) -> None:
        self._scale()

    async def wait_settled(self, timeout: float) -> bool:
        """Wait until the first instance is initialized (True) or failed/timed out (False)."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return any(i.init_ms is not None for i in self._instances)

    async def invoke(self, payload: bytes, source: str | None = None, *, lineage: int = 0,
                     started: asyncio.Future[None] | None = None) -> bytes:
        """Run one invocation; returns the response payload or raises FunctionError.
        `source` (a connection id) keeps one caller's backlog from queueing the others;
        `lineage`: how many invocations of this function the request chain went through before
        this one; `started` is resolved when an instance takes the invocation. Lambda would
        have started another instance instead of queueing it here, so a caller's timeout that
        stands for an AWS one (API Gateway's integration timeout) counts from then."""
        if self._closing:
            raise FunctionError("Runtime.Shutdown", "the local stack is shutting down")
        inv = Invocation(str(uuid.uuid4()), payload, asyncio.get_running_loop().create_future(),
                         source, lineage=lineage, started=started)
        while self._idle:
            inst = self._idle.popleft()
            if inst.idle:
                inst.waiter.set_result(inv)  # type: ignore[union-attr]
                break
        else:
            self._pending.append(inv)
            self._scale()
        return await inv.future

    async def close(self) -> None:
        self._closing = True
        if self._backoff_timer is not None:
            self._backoff_timer.cancel()
        self._fail_pending(FunctionError("Runtime.Shutdown", "the local stack is shutting down"))
        for inst in list(self._instances):
            self.kill(inst)
        supervisors = [i.supervisor for i in self._instances if i.supervisor is not None]
        if supervisors:
            await asyncio.wait(supervisors, timeout=2)

    # --- Runtime API callbacks ------------------------------------------------------------

    async def next_invocation(self, request: web.Request, inst: Instance) -> web.StreamResponse:
        if inst.init_ms is None:
            inst.init_ms = (time.monotonic() - inst.started_at) * 1000
            if self._meter is not None:
                self._meter.init(self.spec.key, inst.init_ms)
            self._init_failures = 0
            self._warm = True
            self._settled.set()
        if inst.killed or (inst.current is not None and inst.current.doomed):
            # Answered before the kill landed: park it without work until it is retired.
            inst.waiter = asyncio.get_running_loop().create_future()
            await inst.waiter
            return web.Response(status=410)
        inv = self._take_pending()
        while inv is None:
            inst.waiter = asyncio.get_running_loop().create_future()
            self._idle.append(inst)
            inv = await inst.waiter
            inst.waiter = None
            if inv is None:  # retired while waiting; nobody reads this answer
                return web.Response(status=410)
            if inv.future.done():  # its caller went away while it was being handed over
                inv = self._take_pending()
        inst.current = inv
        inv.fetched_at = time.monotonic()
        if inv.started is not None and not inv.started.done():
            inv.started.set_result(None)
        inv.timer = asyncio.get_running_loop().call_later(
            self.spec.timeout_s, self._timed_out, inst, inv)
        deadline_ms = int(time.time() * 1000 + self.spec.timeout_s * 1000)
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.spec.arn,
            "Lambda-Runtime-Trace-Id": _trace_id(self.lineage_hash, inv.lineage + 1),
            "Content-Type": "application/json",
        }
        response = web.Response(body=inv.payload, headers=headers)
        delay = self.faults.kill_delay(self.names, inv.payload)
        if delay == 0:
            # "as soon as it has fetched the event": deliver it, then pull the plug. A fast
            # function may answer while we are still writing; `doomed` discards that answer.
            inv.doomed = True
            await response.prepare(request)
            await response.write_eof()
            self.kill(inst)
        elif delay is not None:
            # Mid-invocation: whatever the function got done by then (a log write, some posts)
            # stays done, the rest never happens, and the invocation fails like a crash.
            asyncio.get_running_loop().call_later(delay, self._kill_if_running, inst, inv)
        return response

    def _kill_if_running(self, inst: Instance, inv: Invocation) -> None:
        if inst.current is inv and not inv.future.done() and not inst.killed:
            inv.doomed = True
            self.kill(inst)

    def current(self, inst: Instance, request_id: str) -> Invocation:
        if inst.current is None or inst.current.request_id != request_id:
            raise web.HTTPBadRequest(
                text=json.dumps({"errorType": "InvalidRequestID",
                                 "errorMessage": f"unknown request id {request_id}"}),
                content_type="application/json")
        return inst.current

    def finish(self, inst: Instance, inv: Invocation, *, result: bytes | None = None,
               error: FunctionError | None = None, status: str | None = None) -> None:
        if inv.doomed and error is None:
            # A kill fault hit it: an answer the process sent before it died may still be read
            # after the exit (while the watcher drains its output), and must not count. Only the
            # exit watcher's (or the timeout's) error finishes it.
            return
        if inv.timer is not None:
            inv.timer.cancel()
        if inst.current is inv:
            inst.current = None
        if self._meter is not None and inv.fetched_at:
            # Billed from when the instance took it to its answer, error, timeout or death.
            self._meter.invocation(self.spec.key, (time.monotonic() - inv.fetched_at) * 1000)
        if self._report:
            self._emit_report(inst, inv, status)
        if not inv.future.done():
            if error is not None:
                inv.future.set_exception(error)
            else:
                inv.future.set_result(result or b"")

    def kill(self, inst: Instance) -> None:
        inst.killed = True
        if inst.proc is not None:
            procs.kill_group(inst.proc)

    # --- internals ------------------------------------------------------------------------

    def _take_pending(self) -> Invocation | None:
        while self._pending:
            inv = self._pending.popleft()
            if not inv.future.done():
                return inv
        return None

    def _fail_pending(self, error: FunctionError) -> None:
        while self._pending:
            inv = self._pending.popleft()
            if not inv.future.done():
                inv.future.set_exception(error)

    def _timed_out(self, inst: Instance, inv: Invocation) -> None:
        self.finish(inst, inv, status="timeout", error=FunctionError(
            "Sandbox.Timedout",
            f"RequestId: {inv.request_id} Error: Task timed out after {self.spec.timeout_s:.2f} seconds"))
        self.kill(inst)

    def _scale(self) -> None:
        """Start instances for queued work (and the warm one); never more than max_instances."""
        if self._closing:
            return
        pending = sum(1 for inv in self._pending if not inv.future.done())
        starting = sum(1 for i in self._instances if i.init_ms is None)
        wanted = pending - starting
        if not self._instances and self._warm:
            wanted = max(wanted, 1)
        wanted = min(wanted, self._max_instances - len(self._instances))
        if wanted <= 0:
            return
        delay = self._backoff_until - time.monotonic()
        if delay > 0:
            if self._backoff_timer is None:
                self._backoff_timer = asyncio.get_running_loop().call_later(delay, self._retry)
            return
        if not self.spec.available:
            self._settled.set()
            self._warm = False
            self._fail_pending(FunctionError(
                "Runtime.InvalidEntrypoint",
                f"{self.spec.command[0]} not found: build the functions first"))
            return
        for _ in range(wanted):
            inst = Instance(number=next(self._numbers), started_at=time.monotonic())
            self._instances.append(inst)
            inst.supervisor = asyncio.create_task(self._run(inst))

    def _retry(self) -> None:
        self._backoff_timer = None
        self._scale()

    async def _run(self, inst: Instance) -> None:
        """Start one instance's process and supervise it until it exits."""
        returncode: int | str
        try:
            await self._runtime.open(self, inst)
            inst.started_at = time.monotonic()
            inst.proc = await procs.spawn(self.spec.command, self._instance_env(inst), self._cwd)
            if inst.killed:  # closed while it was being spawned
                procs.kill_group(inst.proc)
        except OSError as exc:
            returncode = str(exc)
        else:
            relays = [asyncio.create_task(procs.relay(inst.proc.stdout, self.spec.key)),
                      asyncio.create_task(procs.relay(inst.proc.stderr, self.spec.key))]
            returncode = await inst.proc.wait()
            procs.kill_group(inst.proc, reaped=True)  # anything it forked goes with it
            await asyncio.wait(relays, timeout=1)  # its last words come before ours
        await self._retire(inst)
        reason = (procs.describe_exit(returncode) if isinstance(returncode, int) else returncode)
        if inst.current is not None:
            self.finish(inst, inst.current, status="error", error=FunctionError(
                "Runtime.ExitError",
                f"RequestId: {inst.current.request_id} Error: Runtime exited with error: {reason}"))
        if inst.init_ms is None:
            self._init_failed(inst, reason)
        elif not inst.killed:
            log.warning("%s: instance %d exited (%s)", self.spec.key, inst.number, reason)
        self._scale()

    async def _retire(self, inst: Instance) -> None:
        if inst in self._instances:
            self._instances.remove(inst)
        if inst.idle:
            inst.waiter.set_result(None)  # type: ignore[union-attr]
        await self._runtime.release(inst)

    def _init_failed(self, inst: Instance, reason: str) -> None:
        if self._closing:
            return
        self._init_failures += 1
        self._backoff_until = time.monotonic() + min(0.25 * 2 ** (self._init_failures - 1), 5.0)
        self._warm = False  # try again when there is work, not in a loop
        message = inst.init_error or f"Runtime exited with error: {reason}"
        log.warning("%s: init failed: %s", self.spec.key, message)
        self._settled.set()
        if not any(i.init_ms is not None for i in self._instances):
            self._fail_pending(FunctionError(
                "Runtime.InitError" if inst.init_error else "Runtime.ExitError", message))

    def _instance_env(self, inst: Instance) -> dict[str, str]:
        stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{secrets.token_hex(16)}"
        return {
            **self.spec.env,
            "AWS_LAMBDA_RUNTIME_API": f"{self._runtime.host}:{inst.port}",
            "AWS_LAMBDA_FUNCTION_NAME": self.spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
            "_HANDLER": self.spec.handler,
            "LAMBDA_TASK_ROOT": self._cwd,
        }

    def _emit_report(self, inst: Instance, inv: Invocation, status: str | None) -> None:
        duration = (time.monotonic() - inv.fetched_at) * 1000
        parts = [f"REPORT RequestId: {inv.request_id}", f"Duration: {duration:.2f} ms",
                 f"Billed Duration: {math.ceil(duration)} ms",
                 f"Memory Size: {self.spec.memory_mb} MB"]
        peak = _peak_rss_mb(inst.proc.pid) if inst.proc is not None else None
        if peak is not None:
            parts.append(f"Max Memory Used: {peak} MB")
        if not inst.init_reported and inst.init_ms is not None:
            inst.init_reported = True
            parts.append(f"Init Duration: {inst.init_ms:.2f} ms")
        if status:
            parts.append(f"Status: {status}")
        procs.emit(self.spec.key, "\t".join(parts))


# Lambda stops a request chain that went through the same function this many times (its
# recursive loop detection, which follows the trace header's Lineage through SQS).
MAX_LINEAGE = 16


def lineage_hash(arn: str) -> str:
    return f"{zlib.crc32(arn.encode()):08x}"


def lineage_count(trace_header: str | None, function_hash: str) -> int:
    """How many times the chain of `trace_header` went through the function of `function_hash`
    (`...;Lineage=<hash>:<count>`, several hashes separated by `|`)."""
    for field in (trace_header or "").split(";"):
        key, _, value = field.strip().partition("=")
        if key != "Lineage":
            continue
        for part in value.split("|"):
            name, _, count = part.rpartition(":")
            if name.endswith(function_hash) and count.isdigit():
                return int(count)
    return 0


def _trace_id(function_hash: str, lineage: int) -> str:
    return (f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};"
            f"Parent={secrets.token_hex(8)};Sampled=0;Lineage={function_hash}:{lineage}")


def _peak_rss_mb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return math.ceil(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None
