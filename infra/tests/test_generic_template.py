"""The emulator runs a template that is not Herald's (echo/template.yaml: one Python function, a
table, a WebSocket API with $connect, $disconnect, $default and a `broadcast` route) with
`--adapter generic`: no Herald setting, token or convention is involved, and IAM is enforced on
the function's role from the template's policies. This is the seam between the generic emulator
and Herald's adapter (docs/local-stack.md)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import boto3
import pytest

from conftest import INFRA, poll

ECHO = Path(__file__).resolve().parent / "echo"


@pytest.mark.parametrize("dynamodb", ["dynalite", "moto"])
def test_a_websocket_template_of_another_project_runs_on_the_emulator(tmp_path: Path, dynamodb: str) -> None:
    ready, out = tmp_path / "ready.json", tmp_path / "stack.log"
    env = {**os.environ, "PYTHONPATH": str(INFRA)}
    for name in ("AWS_ENDPOINT_URL", "HERALD_LOCAL_GRANTS_DIR", "HERALD_LOCAL_IAM"):
        env.pop(name, None)
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald_local", "--adapter", "generic", "--stack-name", "echo",
             "--template", str(ECHO / "template.yaml"), "--ready-file", str(ready), "--quiet",
             "--dynamodb", dynamodb,
             "--binary", f"EchoFunction={sys.executable} {ECHO / 'echo_function.py'}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"stack exited with {proc.returncode}:\n{out.read_text()}")
            return ready.exists()
        poll(started, timeout=60, what="the stack's ready file")
        info = json.loads(ready.read_text())
        assert info["tables"] == {"Clients": "echo-Clients"}
        assert "devToken" not in info and "jwt" not in info   # Herald's, not the emulator's

        async def talk() -> tuple[str, list[dict], list[dict]]:
            async with aiohttp.ClientSession() as session:
                url = info["websocketUrl"]
                async with session.ws_connect(url) as alice, session.ws_connect(url) as bob:
                    await alice.send_str("hello")
                    echoed = (await alice.receive(timeout=20)).data
                    await bob.send_str(json.dumps({"action": "broadcast", "text": "to all"}))
                    got_alice = json.loads((await alice.receive(timeout=20)).data)
                    got_bob = json.loads((await bob.receive(timeout=20)).data)
                    return echoed, [got_alice], [got_bob]

        echoed, to_alice, to_bob = asyncio.run(talk())
        assert echoed == "echo: hello"
        assert [m["text"] for m in to_alice] == ["to all"] and [m["text"] for m in to_bob] == ["to all"]
        assert to_alice[0]["from"] == to_bob[0]["from"]

        # Both left: $disconnect emptied the table (on dynalite, like Herald's, or on moto).
        db = boto3.client("dynamodb", endpoint_url=info["awsEndpoint"], region_name=info["region"],
                          aws_access_key_id="x", aws_secret_access_key="x")
        poll(lambda: db.scan(TableName="echo-Clients")["Count"] == 0 or None, timeout=20,
             what="the clients table to empty")
        assert "AccessDenied" not in out.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
