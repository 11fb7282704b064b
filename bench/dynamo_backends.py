"""DynamoDB back-ends side by side on Herald's connect path (issue #34).

Replays a recording of the DynamoDB calls that the functions made while clients connected and
joined (`HERALD_LOCAL_RECORD=FILE` on a stack writes one JSON line per call the AWS proxy
forwarded) against a back-end started for the purpose, with N calls in flight, and reports calls
a second and the back-end's CPU milliseconds per call (from /proc, so a busy machine shows in the
wall time, less in the CPU). Each back-end gets the recording's tables (pk/sk strings, as
Herald's) and the same calls in the same order.

    .venv/bin/python bench/dynamo_backends.py RECORDING.jsonl [--backend moto|dynalite|...]
        [--concurrency 16] [--keep-alive] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"Content-Type": "application/x-amz-json-1.0",
           "X-Amz-Date": "20260101T000000Z",
           "Authorization": "AWS4-HMAC-SHA256 Credential=herald/20260101/us-east-1/dynamodb/aws4_request, "
                            "SignedHeaders=host, Signature=0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(backend: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "infra")}
    if backend == "moto":
        cmd = [sys.executable, "-m", "herald_local.moto_server", "-H", "127.0.0.1", "-p", str(port)]
    elif backend == "moto-plain":   # moto's own server, unpatched
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    elif backend == "dynalite":
        cmd = ["node", os.environ.get("DYNALITE_CLI", str(ROOT / "infra/node_modules/dynalite/cli.js")),
               "--host", "127.0.0.1", "--port", str(port), "--createTableMs", "0"]
    else:
        cmd = [part.replace("{port}", str(port)) for part in backend.split()]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def cpu_seconds(pid: int) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-g", str(pid)], capture_output=True,
                                                   text=True).stdout.split() if int(p) != pid]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


async def call(session, url, target, body):
    async with session.post(url, data=body, headers={**HEADERS, "X-Amz-Target": target}) as r:
        await r.read()
        return r.status


async def run(args) -> dict:
    rows = [json.loads(line) for line in open(args.recording)]
    rows = [r for r in rows if r["target"].startswith("DynamoDB_")][: args.limit or None]
    tables = set()
    for r in rows:
        b = json.loads(r["body"])
        if "TableName" in b:
            tables.add(b["TableName"])
        tables.update((b.get("RequestItems") or {}).keys())
    port = free_port()
    proc = start(args.backend, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        connector = aiohttp.TCPConnector(limit=0, force_close=not args.keep_alive)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(200):
                try:
                    await call(session, url, "DynamoDB_20120810.ListTables", "{}")
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            for name in sorted(tables):
                await call(session, url, "DynamoDB_20120810.CreateTable", json.dumps({
                    "TableName": name, "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                             {"AttributeName": "sk", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]}))
            await asyncio.sleep(0.2)
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            statuses: dict[int, int] = {}
            queue = iter(rows)

            async def worker():
                for r in queue:
                    s = await call(session, url, r["target"], r["body"])
                    statuses[s] = statuses.get(s, 0) + 1
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            wall, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # dynalite_server.js exits (a --cpu-prof is written)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"backend": args.backend, "calls": len(rows), "keepAlive": args.keep_alive,
            "concurrency": args.concurrency, "seconds": round(wall, 2),
            "callsPerSecond": round(len(rows) / wall), "cpuMsPerCall": round(cpu * 1000 / len(rows), 3),
            "statuses": statuses}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("recording")
    p.add_argument("--backend", default="moto")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--keep-alive", action="store_true")
    p.add_argument("--limit", type=int, default=0)
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
