"""One local stack per test session, on infra/tests/template.yaml with fake function binaries.

Tests observe the fakes through the JSON-lines log they append to (HERALD_FAKE_LOG) and poll it
with deadlines; nothing waits a fixed time and then asserts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.config
import pytest

TESTS = Path(__file__).resolve().parent
INFRA = TESTS.parent
TEMPLATE = TESTS / "template.yaml"
FAKE = TESTS / "fakes" / "fake_function.py"

# binary -> fake mode
FAKE_MODES = {
    "authorizer": "authorizer", "ws-connect": "ws-connect", "ws-disconnect": "ws-disconnect",
    "ws-join": "ws-echo", "ws-message": "ws-echo", "ws-fire": "ws-fire", "ws-muted": "ws-fire", "dispatch": "sqs",
    "retry": "sqs", "reminder": "reminder", "api": "api", "echo": "echo", "broken": "init-fail",
}

T = TypeVar("T")


def poll(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Return check()'s first truthy value, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(proc: subprocess.Popen[bytes], port: int, what: str, timeout: float = 30.0) -> str:
    """The loopback URL of `proc` once it accepts connections on `port`; fails (killing it) if it
    exits or does not listen within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"{what} did not start")
            time.sleep(0.1)


def stack_command(ready: Path, fake_log: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "herald_local", "--template", str(TEMPLATE),
           "--ready-file", str(ready), "--visibility-timeout", "1",
           "--env", f"HERALD_FAKE_LOG={fake_log}", *extra]
    for binary, mode in FAKE_MODES.items():
        cmd += ["--binary", f"{binary}={sys.executable} {FAKE} {mode}"]
    return cmd


def start_stack(directory: Path, *extra: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    ready, fake_log, out = directory / "ready.json", directory / "fake.log", directory / "stack.log"
    env = {**os.environ, "PYTHONPATH": str(INFRA)}
    env.pop("AWS_ENDPOINT_URL", None)
    # The test template refuses calls on purpose: they must not count in `make test`'s grant report.
    env.pop("HERALD_LOCAL_GRANTS_DIR", None)
    env.pop("HERALD_LOCAL_IAM", None)
    with open(out, "wb") as log:
        proc = subprocess.Popen(stack_command(ready, fake_log, *extra), stdout=log,
                                stderr=subprocess.STDOUT, env=env)

    def started() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"stack exited with {proc.returncode}:\n{out.read_text()}")
        return ready.exists()

    poll(started, timeout=60, what="the stack's ready file")
    return proc, json.loads(ready.read_text())


def complete_records(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a log a fake may be appending to right now: a last line without its
    newline is still being written, so it is left for the next read."""
    lines = text.split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


class Stack:
    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], directory: Path) -> None:
        self.proc = proc
        self.info = info
        self.directory = directory
        self.fake_log = directory / "fake.log"
        self.output = directory / "stack.log"

    # --- observing the fakes and the stack's output ---------------------------------------

    def records(self, mode: str | None = None) -> list[dict[str, Any]]:
        if not self.fake_log.exists():
            return []
        return [r for r in complete_records(self.fake_log.read_text()) if mode is None or r["mode"] == mode]

    def wait_record(self, mode: str, match: Callable[[dict[str, Any]], bool],
                    timeout: float = 10.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((r for r in self.records(mode) if match(r)), None)
        return poll(find, timeout, what=f"a {mode} record")

    def log_lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    # --- talking to it --------------------------------------------------------------------

    def control(self, method: str, path: str, body: Any = None,
                raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.info["controlUrl"] + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text, headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            status, text, headers = err.code, err.read(), dict(err.headers)
        return status, (json.loads(text) if text else None), headers

    def invoke(self, function: str, event: Any) -> tuple[int, Any, dict[str, str]]:
        return self.control("POST", f"/invoke/{function}", event)

    def client(self, service: str, **config: Any) -> Any:
        endpoint = self.info["managementEndpoint"] if service == "apigatewaymanagementapi" \
            else self.info["awsEndpoint"]
        creds = self.info["managementCredentials"]
        return boto3.client(service, endpoint_url=endpoint, region_name=self.info["region"],
                            aws_access_key_id=creds["accessKeyId"],
                            aws_secret_access_key=creds["secretAccessKey"],
                            config=botocore.config.Config(**config))

    def sign(self, method: str, url: str, body: bytes = b"") -> dict[str, str]:
        """SigV4 headers for a raw @connections call, as the SDKs compute them."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        creds = self.info["managementCredentials"]
        request = AWSRequest(method=method, url=url, data=body)
        SigV4Auth(Credentials(creds["accessKeyId"], creds["secretAccessKey"]), "execute-api",
                  self.info["region"]).add_auth(request)
        return dict(request.headers)

    def management(self) -> Any:
        # One attempt: tests assert on the status each call gets, not on the SDK's retries.
        return self.client("apigatewaymanagementapi", retries={"total_max_attempts": 1, "mode": "standard"})

    def ws_url(self, **query: str) -> str:
        return self.info["websocketUrl"] + ("?" + urllib.parse.urlencode(query) if query else "")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("stack")
    proc, info = start_stack(directory, "--parent-pid", str(os.getpid()))
    yield Stack(proc, info, directory)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, "the stack did not stop cleanly on SIGTERM"


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").control("DELETE", "/faults")
