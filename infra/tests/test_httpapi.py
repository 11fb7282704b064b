"""HTTP API: payload format 2.0 events and API Gateway's response mapping."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from conftest import Stack


def call(stack: Stack, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(stack.info["httpUrl"] + path, data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_event_shape(stack: Stack) -> None:
    status, headers, body = call(stack, "GET", "/items/42?a=1&a=2&b=x%20y",
                                 headers={"X-Custom": "v", "Cookie": "c1=1; c2=2"})
    assert status == 201
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{id}"
    assert event["rawPath"] == "/items/42"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["headers"]["x-custom"] == "v"                     # lower-cased
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["c1=1", "c2=2"]
    ctx = event["requestContext"]
    assert ctx["http"] == {"method": "GET", "path": "/items/42", "protocol": "HTTP/1.1",
                           "sourceIp": "127.0.0.1", "userAgent": event["headers"]["user-agent"]}
    assert ctx["routeKey"] == "GET /items/{id}" and ctx["stage"] == "$default"
    assert isinstance(ctx["timeEpoch"], int) and ctx["requestId"] and ctx["apiId"]
    assert event["isBase64Encoded"] is False and "body" not in event


def test_response_mapping(stack: Stack) -> None:
    status, headers, _ = call(stack, "GET", "/items/1")
    assert status == 201
    assert headers["x-fake"] == "yes"
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    status, headers, body = call(stack, "GET", "/plain")            # no statusCode: inferred
    assert (status, json.loads(body)) == (200, {"hello": "world"})
    assert headers["Content-Type"].startswith("application/json")
    status, _, body = call(stack, "GET", "/binary")                 # isBase64Encoded
    assert (status, body) == (200, b"\x00\x01\xff")
    status, _, body = call(stack, "GET", "/crash")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
    status, _, body = call(stack, "GET", "/nowhere")
    assert (status, json.loads(body)) == (404, {"message": "Not Found"})
    assert call(stack, "DELETE", "/items/1")[0] == 404               # method must match


def test_route_precedence_and_greedy_paths(stack: Stack) -> None:
    event = json.loads(call(stack, "GET", "/items/special")[2])
    assert event["routeKey"] == "GET /items/special" and "pathParameters" not in event
    event = json.loads(call(stack, "PUT", "/things/a/b/c", body=b'{"k": 1}',
                            headers={"Content-Type": "application/json"})[2])
    assert event["routeKey"] == "ANY /things/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b/c"}
    assert (event["body"], event["isBase64Encoded"]) == ('{"k": 1}', False)


def test_binary_request_bodies_are_base64(stack: Stack) -> None:
    event = json.loads(call(stack, "POST", "/things/x", body=b"\x00\xff",
                            headers={"Content-Type": "application/octet-stream"})[2])
    assert (event["body"], event["isBase64Encoded"]) == ("AP8=", True)


def test_cors(stack: Stack) -> None:
    status, headers, _ = call(stack, "OPTIONS", "/items/1", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "GET"})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert headers["Access-Control-Allow-Methods"] == "GET,POST"
    assert headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert headers["Access-Control-Max-Age"] == "600"
    _, headers, _ = call(stack, "GET", "/items/1", headers={"Origin": "http://app.example"})
    assert headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert headers["Access-Control-Expose-Headers"] == "x-fake"
    _, headers, _ = call(stack, "GET", "/items/1", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers


def test_one_callers_burst_does_not_queue_another_caller(stack: Stack) -> None:
    """Lambda gives every request an instance; here a function has a few, shared round-robin
    across callers (by credentials), and the integration timeout counts from when one takes
    the request. A burst of slow requests from one caller: another caller's request is answered
    before the burst is, and none of the burst times out while it waits."""
    done: list[tuple[str, float, int]] = []
    lock = threading.Lock()

    def send(who: str, sleep: float) -> None:
        status = call(stack, "GET", f"/items/1?sleep={sleep}", headers={"Authorization": f"Bearer {who}"})[0]
        with lock:
            done.append((who, time.monotonic(), status))

    burst = [threading.Thread(target=send, args=("greedy", 0.5)) for _ in range(16)]
    for t in burst:
        t.start()
    time.sleep(1.0)  # the burst is queued: 4 instances busy, the rest waiting
    other = threading.Thread(target=send, args=("other", 0))
    other.start()
    for t in [*burst, other]:
        t.join(60)
    assert len(done) == 17 and all(status == 201 for _, _, status in done), done
    other_at = next(at for who, at, _ in done if who == "other")
    after = sum(1 for who, at, _ in done if who == "greedy" and at > other_at)
    # Served round-robin it waits for about one of the burst's requests (more than ten come after
    # it on an idle machine, six on one busy building); in one queue for everyone, behind the
    # whole burst, none would.
    assert after >= 4, f"the other caller waited behind the burst: {after} of 16 answered after it"
