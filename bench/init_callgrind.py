"""Instruction counts of one function's init, stable on a busy machine where wall-clock init is
not: runs BINARY under `valgrind --tool=callgrind` as Lambda would start it (init_time.py's
environment, `_HANDLER`), stops it once it asks for its first event, and leaves the profile in
OUT for `callgrind_annotate --inclusive=yes OUT`.

    cargo build --release --config profile.release.strip=false -p herald-lambda -p herald-bench
    python3 bench/init_callgrind.py target/release/herald dispatch /tmp/cg.dispatch.out
    python3 bench/init_callgrind.py target/release/init-floor floor /tmp/cg.floor.out

(`strip=false` keeps the symbols callgrind names functions by; the code is the same.)
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from init_time import ENV, RuntimeApi, arrived  # noqa: E402 - the shared Runtime API stub


def profile(binary: str, handler: str, out: str, *valgrind_args: str) -> str:
    """Runs BINARY's init as HANDLER under callgrind into OUT; returns the instruction count."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **ENV,
           "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}", "_HANDLER": handler}
    arrived.clear()
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *valgrind_args,
                             binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not arrived.wait(300):
            proc.kill()
            sys.exit(proc.communicate()[1].decode()[-2000:])
        time.sleep(0.5)
        # SIGTERM, not SIGKILL: valgrind writes the profile on the way out.
        proc.send_signal(signal.SIGTERM)
        refs = [line for line in proc.communicate()[1].decode().splitlines() if "I   refs" in line]
    finally:
        server.shutdown()
        server.server_close()
    return refs[-1].split(":", 1)[-1].strip() if refs else "?"


def main() -> None:
    binary, handler, out = sys.argv[1], sys.argv[2], sys.argv[3]
    print(f"{handler}: {profile(binary, handler, out)} instructions to the first next")


if __name__ == "__main__":
    main()
