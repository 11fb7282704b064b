"""Command line: run the stack (default), or talk to a running one (`token`, `invoke`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .stack import Options, Stack

REPO = Path(__file__).resolve().parents[2]
DEFAULT_READY_FILE = REPO / "infra" / ".state" / "ready.json"

log = logging.getLogger("herald_local")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "token":
        return _token(argv[1:])
    if argv and argv[0] == "invoke":
        return _invoke(argv[1:])
    return _run(argv)


# --- run -----------------------------------------------------------------------------------

def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m herald_local",
        description="Herald's local stack. Subcommands for a running stack: token, invoke.")
    p.add_argument("--template", type=Path, default=REPO / "template.yaml")
    p.add_argument("--profile", default="debug", help="cargo profile dir under target/ (debug)")
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"],
                   help="loopback only")
    p.add_argument("--ws-port", type=int, default=0, help="0 = ephemeral")
    p.add_argument("--http-port", type=int, default=0, help="0 = ephemeral")
    p.add_argument("--ready-file", type=Path, default=DEFAULT_READY_FILE)
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    p.add_argument("--env", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override a function environment variable (repeatable)")
    p.add_argument("--visibility-timeout", type=int, metavar="SECONDS",
                   help="override every queue's VisibilityTimeout")
    p.add_argument("--idle-timeout", type=float, default=600.0, metavar="SECONDS")
    p.add_argument("--max-connection-seconds", type=float, default=7200.0, metavar="SECONDS")
    p.add_argument("--binary-dir", default=os.environ.get("HERALD_LOCAL_BIN_DIR"),
                   help="run DIR/<Binary> instead of target/<profile>/<Binary> "
                        "(default $HERALD_LOCAL_BIN_DIR)")
    p.add_argument("--binary", type=_key_value, action="append", default=[],
                   metavar="BINARY=COMMAND", help="run COMMAND (shell-split) for BINARY (repeatable)")
    p.add_argument("--management-auth", choices=["iam", "none"],
                   default=os.environ.get("HERALD_LOCAL_MANAGEMENT_AUTH", "iam"),
                   help="iam: @connections calls must be SigV4-signed with the stack's credentials, "
                        "as on AWS (default); none: accept unsigned calls "
                        "(default $HERALD_LOCAL_MANAGEMENT_AUTH)")
    p.add_argument("--quiet", action="store_true",
                   help="no banner, REPORT lines or info logs (function output is still relayed)")
    return p


def _run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stdout, format="[herald-local] %(levelname)s %(message)s",
                        level=logging.WARNING if args.quiet else logging.INFO)
    options = Options(
        template=args.template, profile=args.profile,
        host="127.0.0.1" if args.host == "localhost" else args.host,
        ws_port=args.ws_port, http_port=args.http_port, ready_file=args.ready_file,
        env=dict(args.env), visibility_timeout=args.visibility_timeout,
        idle_timeout_s=args.idle_timeout, max_connection_s=args.max_connection_seconds,
        quiet=args.quiet, binary_dir=args.binary_dir, binaries=dict(args.binary),
        management_auth=args.management_auth)
    return asyncio.run(_serve(options, args.parent_pid))


async def _serve(options: Options, parent_pid: int | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    watchers = [asyncio.create_task(_watch_parent(parent_pid, stop))] if parent_pid else []
    stack = Stack(options)
    try:
        starting = asyncio.create_task(stack.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # interrupted during start-up
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 130
        stopping.cancel()
        try:
            starting.result()
        except Exception as exc:  # noqa: BLE001 - any start-up failure ends the run with its reason
            log.error("start-up failed: %s", exc)
            return 1
        if not options.quiet:
            print(banner(stack), flush=True)
        for name in stack.failed_functions:
            log.warning("%s did not initialize; its invocations fail until it does", name)
        await stop.wait()
        return 0
    finally:
        for watcher in watchers:
            watcher.cancel()
        await stack.close()


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    was_parent = os.getppid() == pid
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass  # exists, owned by someone else
        if was_parent and os.getppid() != pid:  # reparented: the parent is gone (maybe a zombie)
            break
        await asyncio.sleep(0.5)
    log.info("parent process %d is gone; stopping", pid)
    stop.set()


def banner(stack: Stack) -> str:
    info, opts = stack.info, stack.options
    queues = info["queues"]
    dispatch = queues.get("DispatchQueue") or next(iter(queues.values()), "<no queue>")
    endpoint, region, jwt = info["awsEndpoint"], info["region"], info["jwt"]
    binaries = opts.binary_dir or f"target/{opts.profile}"
    if opts.binaries:
        binaries += f", {len(opts.binaries)} overridden"
    creds = info.get("managementCredentials")
    if opts.management_auth == "none":
        signing = "unsigned calls accepted"
    elif creds:
        signing = f"SigV4 for execute-api: key {creds['accessKeyId']}, secret {creds['secretAccessKey']}"
    else:
        signing = "SigV4 for execute-api with your AWS_* credentials"
    ready = "" if opts.ready_file == DEFAULT_READY_FILE else f" --ready-file {opts.ready_file}"
    message = ('{"tenant": "dev", "to": {"user": "dev-user"}, "event": "demo.hello", '
               '"title": "Hello from the local stack"}')
    lines = [
        "",
        f"Herald local stack is ready  ({opts.template}; binaries: {binaries})",
        f"  WebSocket      {info['websocketUrl']}?token=JWT  (or subprotocols [\"herald.v1\", JWT])",
        f"  HTTP API       {info['httpUrl']}",
        f"  @connections   {info['managementEndpoint']}/@connections/{{connectionId}}  ({signing})",
        f"  control        {info['controlUrl']}",
        f"  AWS endpoint   {endpoint}  (region {region}, any credentials)",
        f"  dispatch queue {dispatch}",
        f"  JWT            issuer {jwt['issuer']}, audience {jwt['audience']}, algorithms "
        f"{jwt['algorithms']}; ES256 key kid local-1 as inline JWKS, HS256 secret in the ready file",
        f"  ready file     {opts.ready_file}",
        "  dev token      sub dev-user, tenant dev, roles admin,service; valid 12 h:",
        "",
        f"export TOKEN={info['devToken']}",
        "",
        "Try:",
        f"  websocat \"{info['websocketUrl']}?token=$TOKEN\"",
        f"  python -m websockets \"{info['websocketUrl']}?token=$TOKEN\"   (pip install websockets)",
        f"  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x aws --region {region} --endpoint-url {endpoint} "
        f"sqs send-message --queue-url {dispatch} --message-body '{message}'",
        f"  python -c 'import boto3; boto3.client(\"sqs\", endpoint_url=\"{endpoint}\", "
        f"region_name=\"{region}\", aws_access_key_id=\"x\", aws_secret_access_key=\"x\")"
        f".send_message(QueueUrl=\"{dispatch}\", MessageBody={json.dumps(message)})'",
        f"  PYTHONPATH=infra python -m herald_local token{ready} --sub u1 --tenant acme --roles instructor",
        f"  PYTHONPATH=infra python -m herald_local invoke{ready} ws-message -e events/ws-message-ping.json",
        "",
    ]
    return "\n".join(lines)


# --- clients of a running stack -----------------------------------------------------------

def _client_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m herald_local {prog}")
    p.add_argument("--ready-file", type=Path, default=DEFAULT_READY_FILE)
    p.add_argument("--control-url", help="e.g. http://127.0.0.1:PORT/_herald (else from the ready file)")
    return p


def _control_url(args: argparse.Namespace) -> str:
    if args.control_url:
        return args.control_url.rstrip("/")
    try:
        return json.loads(args.ready_file.read_text())["controlUrl"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"no running stack: cannot read {args.ready_file} ({exc}); "
                         "start one or pass --control-url") from None


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except urllib.error.URLError as err:
        raise SystemExit(f"cannot reach the stack at {url}: {err.reason}") from None


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _token(argv: list[str]) -> int:
    p = _client_parser("token")
    p.add_argument("--sub", default="dev-user")
    p.add_argument("--tenant", default="dev")
    p.add_argument("--roles", type=_csv, default=[], help="comma list")
    p.add_argument("--groups", type=_csv, help="comma list (the token's groups claim)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds")
    p.add_argument("--alg", default="ES256", choices=["ES256", "HS256"])
    args = p.parse_args(argv)
    body: dict[str, Any] = {"sub": args.sub, "tenant": args.tenant, "roles": args.roles,
                            "ttlSeconds": args.ttl, "alg": args.alg}
    if args.groups is not None:
        body["groups"] = args.groups
    status, out = _post(_control_url(args) + "/token", json.dumps(body).encode())
    if status != 200:
        print(out.decode(errors="replace"), file=sys.stderr)
        return 1
    print(json.loads(out)["token"])
    return 0


def _invoke(argv: list[str]) -> int:
    p = _client_parser("invoke")
    p.add_argument("function", help="binary (e.g. dispatch) or logical id")
    p.add_argument("-e", "--event", type=Path, help="event JSON file (default: stdin, or {})")
    args = p.parse_args(argv)
    if args.event:
        payload = args.event.read_bytes()
    elif not sys.stdin.isatty():
        payload = sys.stdin.buffer.read() or b"{}"
    else:
        payload = b"{}"
    status, out = _post(f"{_control_url(args)}/invoke/{args.function}", payload)
    text = out.decode(errors="replace")
    if status == 200:
        print(text)
        return 0
    print(text, file=sys.stderr)
    return 1
