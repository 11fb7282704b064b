"""Where a `herald-load` run's CPU goes, per kind of process, during its connect phase.

    python3 bench/load_cpu.py [--herald-load target/debug/herald-load] -- --clients 1000 ...

Runs herald-load with the arguments after `--` (it starts its own local stack), samples the CPU
time of every process under it once a second from /proc, and prints, for the connect phase (from
the stack's ready moment, read from its development token's `iat`, to the end of connecting):
connects a second, and CPU seconds and milliseconds per connect of the stack's Python process,
the table servers (dynalite or moto), moto, the functions and the load tool. On a shared machine
the wall time moves with the neighbours; the CPU per connect much less, so compare that.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent, CPU seconds of the process and its reaped children, command line)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = sum(int(f) for f in fields[11:15]) / TICK
        out[int(entry)] = (int(fields[1]), cpu, cmd)
    return out


def tree(root: int) -> dict[int, tuple[float, str]]:
    procs = processes()
    children = collections.defaultdict(list)
    for pid, (parent, _, _) in procs.items():
        children[parent].append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            found[pid] = procs[pid][1:]
        todo += children.get(pid, [])
    return found


def kind(cmd: str) -> str:
    if "dynalite" in cmd:
        return "dynalite"
    if "moto_server" in cmd:
        return "moto"
    if "herald_local" in cmd:
        return "stack (Python)"
    if "herald-load" in cmd:
        return "herald-load"
    return "functions" if re.search(r"/herald( |$)", cmd) else "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--herald-load", default=str(ROOT / "target/debug/herald-load"))
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    args = [a for a in opts.args if a != "--"]
    clients = int(args[args.index("--clients") + 1]) if "--clients" in args else 1000
    samples: list[tuple[float, dict[int, tuple[float, str]]]] = []
    load = subprocess.Popen([opts.herald_load, *args], stderr=subprocess.PIPE, text=True)
    connected_at: list[float] = []
    delivering: list[float] = []   # times of the progress lines while notifications arrive

    def watch_progress() -> None:
        assert load.stderr is not None
        for line in load.stderr:
            sys.stderr.write(line)
            if line.startswith("connect") and f"{clients}/{clients}" in line and not connected_at:
                connected_at.append(time.time())
            if line.startswith("deliver"):
                delivering.append(time.time())

    reader = threading.Thread(target=watch_progress, daemon=True)
    reader.start()
    while load.poll() is None:
        samples.append((time.time(), tree(load.pid)))
        time.sleep(1)
    reader.join(5)
    if not connected_at:
        print("load_cpu: the run did not finish connecting", file=sys.stderr)
        return 1
    # The stack's log is under the checkout the herald-load binary was built in (it starts the
    # stack of its own checkout): target/<profile>/herald-load -> the checkout.
    checkout = Path(opts.herald_load).resolve().parents[2]
    logs = sorted(checkout.glob("target/e2e/herald-load-*/stack.log"), key=lambda p: p.stat().st_mtime)
    token = re.search(r"export TOKEN=\S+?\.(\S+?)\.", logs[-1].read_text()) if logs else None
    if token is None:
        print("load_cpu: no development token in the stack's log (not a local run?)", file=sys.stderr)
        return 1
    claims = json.loads(base64.urlsafe_b64decode(token.group(1) + "=" * (-len(token.group(1)) % 4)))
    start, end = float(claims["iat"]), connected_at[0]
    spent, seconds = _spent(samples, start, end)
    print(f"\nconnect phase: {clients} clients in {seconds:.1f} s = {clients / seconds:.1f} connects/s; "
          f"CPU {sum(spent.values()):.1f} s = {sum(spent.values()) / seconds:.2f} cores")
    for name, cpu in spent.most_common():
        print(f"  {name:16s} {cpu:7.1f} s  {cpu * 1000 / clients:6.1f} ms/connect")
    if len(delivering) > 1:
        spent, seconds = _spent(samples, end, delivering[-1])
        print(f"delivery phase: {seconds:.1f} s; CPU {sum(spent.values()):.1f} s = "
              f"{sum(spent.values()) / max(seconds, 1e-9):.2f} cores")
        for name, cpu in spent.most_common():
            print(f"  {name:16s} {cpu:7.1f} s  {cpu / max(seconds, 1e-9) * 100:5.0f} % of a core")
    return load.returncode or 0


def _spent(samples: list[tuple[float, dict[int, tuple[float, str]]]], start: float,
           end: float) -> tuple[collections.Counter[str], float]:
    first = min(samples, key=lambda s: abs(s[0] - start))
    last = min(samples, key=lambda s: abs(s[0] - end))
    spent: collections.Counter[str] = collections.Counter()
    for pid, (cpu, cmd) in last[1].items():
        spent[kind(cmd)] += cpu - first[1].get(pid, (0.0, ""))[0]
    return spent, last[0] - first[0]


if __name__ == "__main__":
    sys.exit(main())
