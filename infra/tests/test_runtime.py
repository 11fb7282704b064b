"""Lambda Runtime API and process pools, driven through the control API's invoke."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import Stack, poll, start_stack

REPORT = re.compile(r"^\[echo\] REPORT RequestId: [0-9a-f-]{36}\tDuration: [\d.]+ ms\t"
                    r"Billed Duration: \d+ ms\tMemory Size: 512 MB\t")


def test_invoke_returns_the_response_with_the_functions_environment(stack: Stack) -> None:
    status, body, _ = stack.invoke("echo", {"hello": 1, "env": [
        "ECHO_ONLY", "HERALD_LOG_FORMAT", "HERALD_WS_ENDPOINT", "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_ENDPOINT_URL", "HERALD_JWT_ISSUER",
        "HERALD_JWT_JWKS_URL", "HERALD_STAGE_KIND", "HERALD_PICKED", "HERALD_FAKE_LOG",
        "HERALD_JWT_HS256_SECRET"]})
    assert status == 200
    assert body["event"]["hello"] == 1
    env = body["env"]
    assert env["ECHO_ONLY"] == "yes"
    assert env["HERALD_LOG_FORMAT"] == "json"                  # function beats Globals
    assert env["HERALD_WS_ENDPOINT"] == stack.info["managementEndpoint"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "herald-EchoFunction"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    # Through the stack's proxy (trace headers, AWS faults), which forwards to the endpoint.
    assert env["AWS_ENDPOINT_URL"] == stack.info["functionAwsEndpoint"] != stack.info["awsEndpoint"]
    assert env["HERALD_JWT_ISSUER"] == "herald-local"          # local JWT settings beat the template
    assert env["HERALD_JWT_JWKS_URL"] == ""
    # The template gives this function no secret, so the stack does not add one either.
    assert env.get("HERALD_JWT_HS256_SECRET") is None
    assert env["HERALD_STAGE_KIND"] == "production"
    assert env["HERALD_PICKED"] == "a,y"
    assert env["HERALD_FAKE_LOG"] == str(stack.fake_log)       # --env
    assert stack.invoke("EchoFunction", {})[0] == 200          # logical ids work too


def test_report_line_after_each_invocation(stack: Stack) -> None:
    stack.invoke("echo", {"report": True})
    line = poll(lambda: next((l for l in stack.log_lines() if REPORT.match(l)), None),
                what="a REPORT line")
    assert "Max Memory Used:" in line
    # The first invocation of an instance reports its init.
    assert any(REPORT.match(l) and "Init Duration:" in l for l in stack.log_lines())


def test_function_error_is_502_with_the_error_document(stack: Stack) -> None:
    status, body, headers = stack.invoke("echo", {"raise": "it broke"})
    assert status == 502
    assert body == {"errorType": "RuntimeError", "errorMessage": "it broke"}
    assert headers["X-Amz-Function-Error"] == "Unhandled"


def test_timeout_kills_and_restarts_the_instance(stack: Stack) -> None:
    status, body, _ = stack.invoke("echo", {"sleep": 5})
    assert status == 502
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 3.00 seconds" in body["errorMessage"]
    assert any("[echo] REPORT" in l and "Status: timeout" in l for l in stack.log_lines())
    assert stack.invoke("echo", {})[0] == 200


def test_timeout_scale_multiplies_every_functions_timeout(tmp_path: Path) -> None:
    """`--timeout-scale 3` (what the test harnesses use): echo's 3 s Timeout becomes 9 s, so a
    4 s invocation completes, and a timeout reports the scaled limit."""
    proc, info = start_stack(tmp_path, "--timeout-scale", "3", "--quiet")
    scaled = Stack(proc, info, tmp_path)
    try:
        status, body, _ = scaled.invoke("echo", {"sleep": 4})
        assert (status, body.get("event", {}).get("sleep")) == (200, 4), body
        status, body, _ = scaled.invoke("echo", {"sleep": 12})
        assert status == 502
        assert "Task timed out after 9.00 seconds" in body["errorMessage"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_exit_during_invocation_is_a_runtime_exit_error(stack: Stack) -> None:
    status, body, _ = stack.invoke("echo", {"exit": 3})
    assert status == 502
    assert body["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in body["errorMessage"]
    assert stack.invoke("echo", {})[0] == 200


def test_kill_fault_then_restart(stack: Stack) -> None:
    before = stack.invoke("echo", {})[1]["pid"]
    assert stack.control("POST", "/faults/kill", {"function": "echo", "match": "killme"})[0] == 204
    assert stack.invoke("echo", {"other": 1})[0] == 200          # does not match: unharmed
    status, body, _ = stack.invoke("echo", {"x": "killme"})
    assert status == 502
    assert body["errorType"] == "Runtime.ExitError"
    assert "signal: killed" in body["errorMessage"]
    status, body, _ = stack.invoke("echo", {"x": "killme"})     # count was 1: consumed
    assert status == 200
    assert body["pid"] != before
    assert stack.control("POST", "/faults/kill", {"function": "nope"})[0] == 404


def test_busy_instances_scale_out_to_four(stack: Stack) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: stack.invoke("echo", {"sleep": 1.5}), range(6)))
    assert all(status == 200 for status, _, _ in results)
    assert len({body["pid"] for _, body, _ in results}) == 4


def test_max_instances_raises_the_scale_out_limit(tmp_path: Path) -> None:
    """`--max-instances 6`: six concurrent invocations run on six processes at once instead of
    queueing behind four."""
    proc, info = start_stack(tmp_path, "--max-instances", "6", "--quiet")
    wide = Stack(proc, info, tmp_path)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda _: wide.invoke("echo", {"sleep": 1.5}), range(8)))
        assert all(status == 200 for status, _, _ in results)
        assert len({body["pid"] for _, body, _ in results}) == 6
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_init_error_fails_the_invocation(stack: Stack) -> None:
    status, body, _ = stack.invoke("broken", {})
    assert status == 502
    assert body["errorType"] == "Runtime.InitError"
    assert "HERALD_NOTHING is not set" in body["errorMessage"]


def test_missing_binary_fails_fast(stack: Stack) -> None:
    status, body, _ = stack.invoke("ghost", {})
    assert status == 502
    assert body["errorType"] == "Runtime.InvalidEntrypoint"
    assert "target/debug/ghost" in body["errorMessage"]
    assert stack.info["functions"]["ghost"]["running"] is False


def test_unknown_function_is_404(stack: Stack) -> None:
    assert stack.invoke("nope", {})[0] == 404
