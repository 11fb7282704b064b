"""Cold start of several function binaries, measured interleaved in one run (so machine noise
hits all of them alike). For each start:

* **init**: process start to the first `GET /runtime/invocation/next` (what Lambda reports as
  Init Duration), and the process's RSS at that moment;
* **first invocation** (`--invoke`): the stub then answers that `next` with the function's event
  fixture from `events/` and times until the process posts the response (or error) for it. Work a
  function defers to its first use (SDK HTTP connectors, TLS roots, credentials) shows up here.

Prints a Markdown table; with a floor target (label `floor`) every row also gets its ratio to it.

    python bench/init_all.py RUNS [--invoke] [LABEL=BINARY[:HANDLER] ...]

    # no targets: the floor (a lambda_runtime hello-world) and the nine functions of the one
    # binary, from target/release
    python bench/init_all.py 21 --invoke

    # the one binary, as two of its functions, next to a previous build of it
    python bench/init_all.py 15 authorizer=target/release/herald:authorizer \\
        old-authorizer=/tmp/old/target/release/herald:authorizer

HANDLER is passed as `_HANDLER`, as Lambda does. Stdlib only; the environment is init_time.py's.
For the first invocation every AWS endpoint (`AWS_ENDPOINT_URL`, the queue URLs, the
@connections endpoint) points at a local stub that answers every request `200 {}` at once, so
the time is Herald's own (the SDK may then reject a `{}` answer: that is the same in every
build); HS256 tokens for the fixtures' `REPLACE_WITH_JWT` are signed with the stub secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from init_time import ENV  # noqa: E402 - the environment template.yaml gives the functions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The event each function's first invocation gets (files in events/).
FIXTURES = {
    "authorizer": "authorizer.json",
    "ws-connect": "ws-connect.json",
    "ws-disconnect": "ws-disconnect.json",
    "ws-join": "ws-join.json",
    "ws-message": "ws-message-resume.json",
    "dispatch": "dispatch.json",
    "retry": "retry.json",
    "reminder": "reminder.json",
    "api": "api-missed.json",
}
FUNCTIONS = list(FIXTURES)


def hs256_token() -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"iss": ENV["HERALD_JWT_ISSUER"], "aud": ENV["HERALD_JWT_AUDIENCE"], "sub": "u1",
              "tenant": "acme", "roles": ["student"], "groups": ["course:42"],
              "exp": int(time.time()) + 3600}
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(ENV["HERALD_JWT_HS256_SECRET"].encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac.digest())}"


class Run:
    """What the Runtime API stub knows about the process being measured."""

    def __init__(self) -> None:
        self.event: bytes | None = None     # None: never answer `next` (init only)
        self.asked = threading.Event()      # the first `next` arrived
        self.answered = threading.Event()   # the response (or error) of the first event arrived
        self.asked_at = 0.0
        self.sent_at = 0.0
        self.answered_at = 0.0
        self.outcome = ""


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle, the second waits for the client's delayed
    # ACK (40 ms), which would be measured as the function's time.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self.path.endswith("/runtime/invocation/next"):
            return self.reply(404, b"{}")
        run = self.server.run
        if run.asked.is_set():              # a second `next`: the measurement is over
            time.sleep(5)
            return
        run.asked_at = time.perf_counter()
        run.asked.set()
        if run.event is None:
            time.sleep(5)                   # never answer: the process is killed first
            return
        self.send_response(200)
        for name, value in (("Content-Type", "application/json"),
                            ("Lambda-Runtime-Aws-Request-Id", "init-bench-1"),
                            ("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000)),
                            ("Lambda-Runtime-Invoked-Function-Arn",
                             "arn:aws:lambda:us-east-1:000000000000:function:herald-init"),
                            ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
                            ("Content-Length", str(len(run.event)))):
            self.send_header(name, value)
        self.end_headers()
        run.sent_at = time.perf_counter()
        self.wfile.write(run.event)
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        run = self.server.run
        if "/runtime/invocation/" in self.path and not run.answered.is_set():
            run.answered_at = time.perf_counter()
            run.outcome = self.path.rsplit("/", 1)[-1]
            run.answered.set()
        self.reply(202, b"{}")

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


class AwsStub(http.server.BaseHTTPRequestHandler):
    """Every AWS API and the @connections endpoint: `200 {}` to any request."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *_: object) -> None:
        pass


def tail(log: typing.BinaryIO) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-1500:]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    run = Run()

    def handle_error(self, *_: object) -> None:
        pass  # a measured process is killed with its connections open: expected, not news


def serve(handler: type) -> Server:
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def main() -> None:
    args = sys.argv[1:]
    runs = int(args.pop(0))
    invoke = "--invoke" in args
    args = [a for a in args if a != "--invoke"]
    if not args:
        args = [f"floor={ROOT}/target/release/init-floor"] + \
               [f"{f}={ROOT}/target/release/herald:{f}" for f in FUNCTIONS]
    targets = []
    for arg in args:
        label, _, spec = arg.partition("=")
        binary, _, handler = spec.partition(":")
        targets.append((label, binary, handler or "bootstrap"))

    aws = serve(AwsStub)
    base = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **ENV}
    if invoke:
        stub = f"http://127.0.0.1:{aws.server_address[1]}"
        base = {k: v.replace("http://127.0.0.1:9", stub) for k, v in base.items()}
    token = hs256_token()
    events = {}
    for label, _, handler in targets:
        name = FIXTURES.get(handler) or FIXTURES.get(label)
        if name:
            with open(os.path.join(ROOT, "events", name), encoding="utf-8") as f:
                events[label] = f.read().replace("REPLACE_WITH_JWT", token).encode()
        else:
            events[label] = b'{"hello": "world"}'

    samples: dict[str, list[tuple[float, int, float]]] = {label: [] for label, _, _ in targets}
    outcomes: dict[str, set[str]] = {label: set() for label, _, _ in targets}
    # The function's logs go to a file, not a pipe nobody reads while it runs (a full pipe would
    # block the process mid-invocation).
    log = tempfile.TemporaryFile()
    for _ in range(runs):
        for label, binary, handler in targets:
            # A Runtime API of its own for every process: a killed process's last request must not
            # reach the next one's stub.
            runtime = serve(RuntimeApi)
            run = runtime.run = Run()
            run.event = events[label] if invoke else None
            log.seek(0)
            log.truncate()
            env = {**base, "_HANDLER": handler, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime.server_address[1]}"}
            started = time.perf_counter()
            proc = subprocess.Popen([binary], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)
            if not run.asked.wait(10):
                proc.kill()
                sys.exit(f"{label} never asked for an event: {tail(log)}")
            init = (run.asked_at - started) * 1000
            rss = rss_kb(proc.pid)
            first = 0.0
            if invoke:
                if not run.answered.wait(20):
                    proc.kill()
                    sys.exit(f"{label} never answered its first event: {tail(log)}")
                first = (run.answered_at - run.sent_at) * 1000
                outcomes[label].add(run.outcome)
                if os.environ.get("INIT_ALL_LOGS"):
                    print(f"--- {label}: {tail(log)}", file=sys.stderr)
            samples[label].append((init, rss, first))
            proc.kill()
            proc.wait()
            runtime.shutdown()
            runtime.server_close()
    aws.shutdown()

    def med(label: str, i: int) -> float:
        return statistics.median(s[i] for s in samples[label])

    floor = "floor" if "floor" in samples else None
    head = f"| function | init median (of {runs}) | range | RSS at init |"
    rule = "|---|---|---|---|"
    if floor:
        head += " init / floor | RSS / floor |"
        rule += "---|---|"
    if invoke:
        head += " first invocation (median) | range |"
        rule += "---|---|"
    print(head)
    print(rule)
    for label, _, _ in targets:
        ms = [s[0] for s in samples[label]]
        row = f"| {label} | {med(label, 0):.1f} ms | {min(ms):.1f}–{max(ms):.1f} | {med(label, 1) / 1024:.1f} MB |"
        if floor:
            row += f" {med(label, 0) / med(floor, 0):.2f}× | {med(label, 1) / med(floor, 1):.2f}× |"
        if invoke:
            firsts = [s[2] for s in samples[label]]
            row += f" {med(label, 2):.1f} ms ({'/'.join(sorted(outcomes[label]))}) | {min(firsts):.1f}–{max(firsts):.1f} |"
        print(row)


if __name__ == "__main__":
    main()
