"""Cold-start init of several function binaries, measured interleaved in one run (so machine
noise hits all of them alike): process start to the first `GET /runtime/invocation/next`, and
the process's RSS at that moment. Prints a Markdown table.

    python bench/init_all.py RUNS LABEL=BINARY[:HANDLER] ...

    # the one binary, as three of its functions, next to a previous build's separate binaries
    python bench/init_all.py 15 \\
        authorizer=target/release/herald:authorizer dispatch=target/release/herald:dispatch \\
        old-dispatch=/tmp/old/target/release/dispatch

HANDLER is passed as `_HANDLER`, as Lambda does. Stdlib only; the environment is init_time.py's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import http.server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from init_time import ENV, RuntimeApi, arrived  # noqa: E402 - the shared Runtime API stub


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    runs = int(sys.argv[1])
    targets = []
    for arg in sys.argv[2:]:
        label, _, spec = arg.partition("=")
        binary, _, handler = spec.partition(":")
        targets.append((label, binary, handler or "bootstrap"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **ENV,
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}"}
    samples: dict[str, list[tuple[float, int]]] = {label: [] for label, _, _ in targets}
    for _ in range(runs):
        for label, binary, handler in targets:
            arrived.clear()
            started = time.perf_counter()
            proc = subprocess.Popen([binary], env={**base, "_HANDLER": handler},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if not arrived.wait(10):
                proc.kill()
                sys.exit(f"{label} never asked for an event: {proc.communicate()[1].decode()[-500:]}")
            elapsed = (time.perf_counter() - started) * 1000
            samples[label].append((elapsed, rss_kb(proc.pid)))
            proc.kill()
            proc.wait()
    server.shutdown()
    print(f"| binary | init median (of {runs}) | range | RSS at init |")
    print("|---|---|---|---|")
    for label, _, _ in targets:
        ms = [m for m, _ in samples[label]]
        rss = statistics.median(r for _, r in samples[label]) / 1024
        print(f"| {label} | {statistics.median(ms):.1f} ms | {min(ms):.1f}–{max(ms):.1f} | {rss:.1f} MB |")


if __name__ == "__main__":
    main()
