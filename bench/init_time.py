"""Cold-start init time of a function binary, as Lambda counts it: from process start to the
runtime's first `GET /runtime/invocation/next` (configuration read, SDK clients built).

    python bench/init_time.py BINARY [RUNS] [HANDLER]   -> prints the median and range in ms

HANDLER is passed as `_HANDLER`, as Lambda does from the function's `Handler:` (Herald's one
binary serves every function and picks the handler by it).

A tiny Runtime API on a loopback port records when the request arrives; the process is then
killed (it never gets an event). Stdlib only. The environment is the one `template.yaml` gives
the functions, with placeholder values: init makes no network calls.
"""

from __future__ import annotations

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "init", "AWS_SECRET_ACCESS_KEY": "init",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_LAMBDA_FUNCTION_NAME": "herald-init", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "init",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/herald-init",
    "HERALD_CONNECTIONS_TABLE": "connections", "HERALD_NOTIFICATIONS_TABLE": "notifications",
    "HERALD_DISPATCH_QUEUE_URL": "http://127.0.0.1:9/000000000000/dispatch",
    "HERALD_DISPATCH_DLQ_URL": "http://127.0.0.1:9/000000000000/dlq",
    "HERALD_RETRY_QUEUE_URL": "http://127.0.0.1:9/000000000000/retry",
    "HERALD_INTERNAL_QUEUE_URL": "http://127.0.0.1:9/000000000000/fanout",
    "HERALD_ESCALATION_QUEUE_URL": "http://127.0.0.1:9/000000000000/escalation",
    "HERALD_WS_ENDPOINT": "http://127.0.0.1:9/local",
    "HERALD_SCHEDULE_GROUP": "herald",
    "HERALD_SCHEDULER_ROLE_ARN": "arn:aws:iam::000000000000:role/scheduler",
    "HERALD_REMINDER_TARGET_ARN": "arn:aws:lambda:us-east-1:000000000000:function:reminder",
    "HERALD_JWT_ISSUER": "https://issuer.example", "HERALD_JWT_AUDIENCE": "herald",
    "HERALD_JWT_ALGORITHMS": "HS256", "HERALD_JWT_HS256_SECRET": "init-time-secret-init-time-secret",
}

arrived = threading.Event()


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.endswith("/runtime/invocation/next"):
            arrived.set()
            time.sleep(5)   # never answer: the process is killed first

    def log_message(self, *_: object) -> None:
        pass


def main() -> None:
    binary, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15
    handler = sys.argv[3] if len(sys.argv) > 3 else "bootstrap"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **ENV,
           "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}", "_HANDLER": handler}
    samples = []
    for _ in range(runs):
        arrived.clear()
        started = time.perf_counter()
        proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not arrived.wait(10):
            proc.kill()
            sys.exit(f"{binary} never asked for an event: {proc.communicate()[1].decode()[-500:]}")
        samples.append((time.perf_counter() - started) * 1000)
        proc.kill()
        proc.wait()
    print(f"init {statistics.median(samples):.1f} ms (median of {runs}; {min(samples):.1f}-{max(samples):.1f})")
    server.shutdown()


if __name__ == "__main__":
    main()
