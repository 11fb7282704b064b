"""Ready file, control API basics, the `token` / `invoke` subcommands, and shutdown hygiene."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INFRA, Stack, poll, start_stack


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "herald_local", *args], input=stdin,
                          capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(INFRA)})


def test_ready_file(stack: Stack) -> None:
    info = stack.info
    assert info["websocketUrl"].startswith("ws://127.0.0.1:") and info["websocketUrl"].endswith("/prod")
    assert info["managementEndpoint"] == info["websocketUrl"].replace("ws://", "http://")
    assert info["httpUrl"].startswith("http://127.0.0.1:")
    assert info["controlUrl"].endswith("/_herald")
    assert info["region"] == "us-east-1" and info["stage"] == "prod"
    assert set(info["queues"]) == {"DispatchQueue", "DispatchDeadLetterQueue", "RetryQueue",
                                   "RetryDeadLetterQueue", "ReminderDeadLetterQueue"}                  # SkippedQueue: condition
    assert info["tables"] == {"ConnectionsTable": "herald-ConnectionsTable",
                              "NotificationsTable": "herald-NotificationsTable"}
    assert info["scheduleGroup"] == "herald-HeraldScheduleGroup"
    jwt = info["jwt"]
    assert (jwt["issuer"], jwt["audience"], jwt["algorithms"]) == ("herald-local", "herald", "ES256,HS256")
    assert jwt["jwks"]["keys"][0]["kid"] == "local-1" and jwt["hs256Secret"]
    env = info["functionEnv"]
    assert env["HERALD_WS_ENDPOINT"] == info["managementEndpoint"]
    assert env["HERALD_DISPATCH_QUEUE_URL"] == info["queues"]["DispatchQueue"]
    assert env["HERALD_REMINDER_TARGET_ARN"].endswith(":function:herald-reminder")
    assert "AWS_ACCESS_KEY_ID" not in env and info["iam"] == "enforce"   # a key per function
    assert info["devToken"].count(".") == 2
    assert stack.control("GET", "/health")[:2] == (200, {"status": "ready"})


def test_provisioned_resources_exist(stack: Stack) -> None:
    ddb = stack.client("dynamodb")
    table = ddb.describe_table(TableName="herald-NotificationsTable")["Table"]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"
    ttl = ddb.describe_time_to_live(TableName="herald-ConnectionsTable")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expiresAt"
    sqs = stack.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=stack.info["queues"]["DispatchQueue"],
                                     AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "1"                      # --visibility-timeout
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 2


def test_token_subcommand(stack: Stack) -> None:
    ready = str(stack.directory / "ready.json")
    out = cli("token", "--ready-file", ready, "--sub", "u9", "--tenant", "acme",
              "--roles", "instructor,admin", "--groups", "course:42", "--ttl", "60")
    assert out.returncode == 0, out.stderr
    token = out.stdout.decode().strip()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert (claims["sub"], claims["tenant"], claims["roles"], claims["groups"]) == \
        ("u9", "acme", ["instructor", "admin"], ["course:42"])
    assert claims["exp"] - claims["iat"] == 60
    status, body, _ = stack.control("POST", "/token", {"sub": "u2", "alg": "HS256"})
    assert status == 200 and body["token"].count(".") == 2
    assert stack.control("POST", "/token", {"alg": "none"})[0] == 400


def test_invoke_subcommand(stack: Stack, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"from": "file"}')
    ready = str(stack.directory / "ready.json")
    out = cli("invoke", "--ready-file", ready, "echo", "-e", str(event))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["event"] == {"from": "file"}
    out = cli("invoke", "--control-url", stack.info["controlUrl"], "echo", stdin=b'{"raise": "no"}')
    assert out.returncode == 1
    assert json.loads(out.stderr)["errorMessage"] == "no"


def test_clients_without_a_stack_explain_themselves(tmp_path: Path) -> None:
    out = cli("token", "--ready-file", str(tmp_path / "missing.json"))
    assert out.returncode != 0 and b"no running stack" in out.stderr


@pytest.mark.parametrize("value", ["0", "-2", "four"])
def test_a_bad_instance_limit_is_refused_before_anything_starts(value: str) -> None:
    out = cli("--max-instances", value, "--quiet")
    assert out.returncode == 2, out
    assert b"--max-instances" in out.stderr


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("how", ["parent-exits", "sigkill"])
def test_nothing_is_left_running(tmp_path: Path, how: str) -> None:
    """--parent-pid: the stack stops cleanly when its parent goes. SIGKILL of the stack itself:
    the children die with it (PR_SET_PDEATHSIG)."""
    parent = subprocess.Popen(["sleep", "120"])
    proc, _ = start_stack(tmp_path, "--parent-pid", str(parent.pid), "--quiet")
    children = _descendants(proc.pid)
    assert len(children) >= 10            # moto + one instance per function
    if how == "parent-exits":
        parent.kill()
        parent.wait()
        assert proc.wait(timeout=30) == 0
    else:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        parent.kill()
        parent.wait()
    poll(lambda: not any(_alive(pid) for pid in children), timeout=15, what="children to exit")
    assert not (tmp_path / "ready.json").exists() or how == "sigkill"
