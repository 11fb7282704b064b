"""moto's server as the local stack runs it: moto's app, patched (`moto_patches`), on a threaded
werkzeug server whose request threads are reused.

moto serves SQS, STS, the Scheduler and S3 here, and DynamoDB tables with `--dynamodb moto` (or a
table with a stream); dynalite serves the other tables (aws.py). What each patch changes and why
is in its module under `moto_patches/`, with its test; `moto_patches.check_version()` refuses a
moto they were not tested on. The measurements behind them are in docs/local-stack.md ("moto's
patches, and how they came about").

The server: werkzeug's threaded server, which moto runs, starts a thread for every connection
(and every answer closes its connection), and its accept loop waits until each new thread runs,
which on a moto whose threads all wait for one GIL held back the next accept. Here a request
goes to an idle thread when there is one. werkzeug's request log is off (it was 11 % of moto's
CPU); errors are still logged.

Usage: python -m herald_local.moto_server -H HOST -p PORT[,PORT...]   (one process per port)
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import queue
import signal
import socketserver
import sys
import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer

from . import moto_patches


def patch() -> None:
    moto_patches.apply()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


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
    try:
        patch()
    except moto_patches.UntestedMoto as exc:
        sys.exit(str(exc))
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
