"""A stand-in for a Herald function binary: speaks the Lambda Runtime API like lambda_runtime.

Usage: fake_function.py MODE. Every mode appends what it saw to the JSON-lines file named by
HERALD_FAKE_LOG, so tests can assert on events without timing assumptions. Stdlib only, except
boto3 (imported when a mode posts to @connections, as the Rust functions' SDK would).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.request
from typing import Any, Callable

RUNTIME = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"
MODE = sys.argv[1]


def record(**fields: Any) -> None:
    line = (json.dumps({"mode": MODE, "pid": os.getpid(), **fields}) + "\n").encode()
    # One write(2) on an O_APPEND descriptor, so lines from concurrent fakes never interleave;
    # a buffered text file may split a long line into several writes.
    fd = os.open(os.environ["HERALD_FAKE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def management_client() -> Any:
    import boto3  # the SDK path the Rust functions take: errors mapped from x-amzn-ErrorType

    return boto3.client("apigatewaymanagementapi", endpoint_url=os.environ["HERALD_WS_ENDPOINT"])


def post_to(connection_id: str, data: bytes) -> str:
    """Post and return "ok" or the SDK's error code (e.g. GoneException)."""
    client = management_client()
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=data)
        return "ok"
    except client.exceptions.ClientError as err:
        return err.response["Error"]["Code"]


# --- modes ---------------------------------------------------------------------------------

class Unauthorized(Exception):
    pass


def authorizer(event: dict[str, Any]) -> Any:
    record(event=event)
    token = (event.get("queryStringParameters") or {}).get("token")
    if token is None:
        protocols = (event.get("headers") or {}).get("Sec-WebSocket-Protocol", "")
        parts = [p.strip() for p in protocols.split(",")]
        token = parts[1] if len(parts) > 1 and parts[0] == "herald.v1" else None
    if token == "boom":
        raise RuntimeError("authorizer crashed")
    if token not in ("good", "deny"):
        raise Unauthorized("Unauthorized")
    return {
        "principalId": "u1",
        "policyDocument": {"Version": "2012-10-17", "Statement": [{
            "Action": ["execute-api:Invoke"],
            "Effect": "Allow" if token == "good" else "Deny",
            "Resource": [event["methodArn"]]}]},
        "context": {"user": "u1", "tenant": "acme", "roles": "admin,service", "groups": ""},
        "usageIdentifierKey": None,
    }


def ws_connect(event: dict[str, Any]) -> Any:
    headers = event.get("headers") or {}
    query = event.get("queryStringParameters") or {}
    outcome = None
    if "postself" in query:  # a $connect function must not be able to post to itself yet
        outcome = post_to(event["requestContext"]["connectionId"], b"too early")
    record(event=event, selfPost=outcome)
    if "reject" in query:
        return {"statusCode": int(query["reject"])}
    response: dict[str, Any] = {"statusCode": 200}
    if headers.get("Sec-WebSocket-Protocol", "").startswith("herald.v1"):
        response["headers"] = {"Sec-WebSocket-Protocol": "herald.v1"}
    return response


def ws_disconnect(event: dict[str, Any]) -> Any:
    record(event=event)
    return {"statusCode": 200}


def ws_echo(event: dict[str, Any]) -> Any:
    record(event=event)
    ctx = event["requestContext"]
    if "crash" in (event.get("body") or ""):
        raise RuntimeError("route crashed")
    return {"statusCode": 200, "body": json.dumps(
        {"route": ctx["routeKey"], "body": event.get("body"),
         "isBase64Encoded": event.get("isBase64Encoded"), "authorizer": ctx.get("authorizer")})}


def ws_fire(event: dict[str, Any]) -> Any:
    """A one-way route that answers through @connections while its invocation is in flight."""
    body = json.loads(event["body"])
    connection_id = body.get("to", event["requestContext"]["connectionId"])
    outcomes = [post_to(connection_id, json.dumps({"n": i}).encode())
                for i in range(int(body.get("times", 1)))]
    record(event=event, outcomes=outcomes)
    return {"statusCode": 200, "body": "not sent: no route response"}


def sqs(event: dict[str, Any]) -> Any:
    records = event["Records"]
    record(event=event)
    time.sleep(max((float(r["body"].split(":")[1]) for r in records
                    if r["body"].startswith("sleep:")), default=0))
    if any("crash" in r["body"] for r in records):
        raise RuntimeError("batch crashed")
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                  for r in records if "fail" in r["body"]]}


def reminder(event: dict[str, Any]) -> Any:
    record(event=event)
    if isinstance(event, dict) and event.get("fail"):
        raise RuntimeError(f"reminder failed: {event['fail']}")
    return None


def api(event: dict[str, Any]) -> Any:
    record(event=event)
    path = event["rawPath"]
    time.sleep(float((event.get("queryStringParameters") or {}).get("sleep", 0)))
    if path == "/plain":
        return {"hello": "world"}
    if path == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(b"\x00\x01\xff").decode(), "isBase64Encoded": True}
    if path == "/crash":
        raise RuntimeError("api crashed")
    return {"statusCode": 201, "headers": {"x-fake": "yes", "content-type": "application/json"},
            "cookies": ["a=1; Path=/", "b=2"], "body": json.dumps(event)}


def echo(event: dict[str, Any]) -> Any:
    """Control-API invocations: sleep, fail or exit on demand; report pid and environment."""
    if "sleep" in event:
        time.sleep(float(event["sleep"]))
    if "raise" in event:
        raise RuntimeError(event["raise"])
    if "exit" in event:
        os._exit(int(event["exit"]))
    return {"event": event, "pid": os.getpid(),
            "env": {k: os.environ.get(k) for k in event.get("env", [])}}


MODES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "authorizer": authorizer, "ws-connect": ws_connect, "ws-disconnect": ws_disconnect,
    "ws-echo": ws_echo, "ws-fire": ws_fire, "sqs": sqs, "reminder": reminder, "api": api,
    "echo": echo,
}


def call(path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(RUNTIME + path, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
    return urllib.request.urlopen(request)


def main() -> None:
    if MODE == "init-fail":
        call("/init/error", json.dumps({"errorType": "Config.Missing",
                                        "errorMessage": "HERALD_NOTHING is not set"}).encode(),
             {"Lambda-Runtime-Function-Error-Type": "Config.Missing"})
        sys.exit(1)
    handler = MODES[MODE]
    print(f"{MODE} ready", flush=True)
    while True:
        with call("/invocation/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            assert response.headers["Lambda-Runtime-Deadline-Ms"].isdigit()
            assert response.headers["Lambda-Runtime-Invoked-Function-Arn"].startswith("arn:aws:lambda:")
            event = json.loads(response.read())
        try:
            result = handler(event)
        except Exception as exc:  # noqa: BLE001 - reported to the runtime like lambda_runtime does
            call(f"/invocation/{request_id}/error",
                 json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode(),
                 {"Lambda-Runtime-Function-Error-Type": "Unhandled"}).close()
            continue
        call(f"/invocation/{request_id}/response", json.dumps(result).encode()).close()


if __name__ == "__main__":
    main()
