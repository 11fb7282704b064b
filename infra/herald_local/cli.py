"""Command line: run the stack (default), or talk to a running one (`token`, `invoke`).

`herald-local` (the installed command) and `python -m herald_local` both come in through
`entry`, with Herald's adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

from .adapter import Adapter
from .generic import Generic
from .herald import Herald
from .runtime import MAX_INSTANCES
from .options import Options
from .stack import Stack

log = logging.getLogger("herald_local")


def entry(prog: str = "herald-local") -> NoReturn:
    """Run `main` and exit with its status at once."""
    code = main(prog=prog)
    # Everything is stopped and reaped by now. Skip interpreter finalization: collecting the heap
    # boto3's models leave behind takes most of a second, and test harnesses wait for our exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None, prog: str = "herald-local") -> int:
    argv = sys.argv[1:] if argv is None else argv
    adapter = _adapter(argv)
    if argv and argv[0] == "token":
        return _token(argv[1:], adapter, f"{prog} token")
    if argv and argv[0] == "invoke":
        return _invoke(argv[1:], adapter, f"{prog} invoke")
    if argv and argv[0] == "grants":
        return _grants(argv[1:], f"{prog} grants")
    return _run(argv, adapter, prog)


def _adapter(argv: list[str]) -> Adapter:
    """Herald's adapter, or with `--adapter generic` the one for any template (generic.py),
    named `--stack-name`. Read before the rest: the adapter gives the other options' defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--adapter", choices=["herald", "generic"], default="herald")
    pre.add_argument("--stack-name", default="local")
    known, _ = pre.parse_known_args(argv)
    return Generic(known.stack_name) if known.adapter == "generic" else Herald()


# --- run -----------------------------------------------------------------------------------

def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {text!r}")
    return value


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, width=78))


def _run_parser(adapter: Adapter, prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("Run a SAM template's serverless application on this machine, no Docker, no AWS "
                    "account: API Gateway WebSocket APIs (routes, REQUEST authorizers, "
                    "@connections) and HTTP APIs, each AWS::Serverless::Function as its own "
                    "process behind the Lambda Runtime API (provided runtimes: "
                    "Metadata.BuildProperties.Binary under target/PROFILE, or CodeUri/bootstrap), "
                    "SQS event sources and EventBridge Scheduler, with the template's DynamoDB "
                    "tables on dynalite and the rest on moto, each function's IAM role enforced, "
                    "faults to inject and a cost meter. Loopback only."),
        epilog="Herald's own conventions (development JWTs, the demo page, its settings) come with "
               "the default --adapter herald; --adapter generic runs any template as it is.\n"
               "Subcommands for a running stack: token, invoke; for test runs: grants.\n"
               "docs/local-stack.md has the whole reference.")
    p.add_argument("--adapter", choices=["herald", "generic"], default="herald",
                   help="herald: Herald's conventions on top of the template (default); generic: "
                        "the template alone (any project)")
    p.add_argument("--stack-name", default="local",
                   help="AWS::StackName with --adapter generic (generated names: NAME-LogicalId)")
    p.add_argument("--template", type=Path, default=adapter.template,
                   help=f"the SAM template (default {adapter.template})")
    p.add_argument("--profile", default="debug", help="cargo profile dir under target/ (debug)")
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"],
                   help="loopback only")
    p.add_argument("--ws-port", type=int, default=0, help="0 = ephemeral")
    p.add_argument("--http-port", type=int, default=0, help="0 = ephemeral")
    p.add_argument("--ready-file", type=Path, default=adapter.ready_file)
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    p.add_argument("--env", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override a function environment variable (repeatable)")
    p.add_argument("--visibility-timeout", type=int, metavar="SECONDS",
                   help="override every queue's VisibilityTimeout")
    p.add_argument("--timeout-scale", type=_positive, default=1.0, metavar="FACTOR",
                   help="multiply every function's Timeout (test harnesses sharing a small "
                        "machine, where a function's duration includes its wait for the CPU)")
    p.add_argument("--max-instances", type=_count, metavar="N",
                   default=int(os.environ.get("HERALD_LOCAL_MAX_INSTANCES") or MAX_INSTANCES),
                   help=f"instances (processes) a function may run at once (default {MAX_INSTANCES}, "
                        "or $HERALD_LOCAL_MAX_INSTANCES); a load run whose invocations would queue "
                        "behind a few may raise it")
    p.add_argument("--idle-timeout", type=float, default=600.0, metavar="SECONDS")
    p.add_argument("--max-connection-seconds", type=float, default=7200.0, metavar="SECONDS")
    p.add_argument("--binary-dir", default=os.environ.get("HERALD_LOCAL_BIN_DIR"),
                   help="run DIR/<Binary> instead of target/<profile>/<Binary> "
                        "(default $HERALD_LOCAL_BIN_DIR)")
    p.add_argument("--binary", type=_key_value, action="append", default=[],
                   metavar="FUNCTION=COMMAND", help="run COMMAND (shell-split) for FUNCTION, its Handler or Binary (repeatable)")
    p.add_argument("--management-auth", choices=["iam", "none"],
                   default=os.environ.get("HERALD_LOCAL_MANAGEMENT_AUTH", "iam"),
                   help="iam: @connections calls must be SigV4-signed with the stack's credentials, "
                        "as on AWS (default); none: accept unsigned calls "
                        "(default $HERALD_LOCAL_MANAGEMENT_AUTH)")
    p.add_argument("--iam", choices=["enforce", "report", "off"],
                   default=os.environ.get("HERALD_LOCAL_IAM", "enforce"),
                   help="enforce: each function runs with credentials of its own and a call its "
                        "role in the template does not allow is refused as AWS refuses it "
                        "(default); report: logged and recorded, not refused; off: every function "
                        "uses the stack's credentials (default $HERALD_LOCAL_IAM)")
    p.add_argument("--dynamodb", choices=["dynalite", "moto"],
                   default=os.environ.get("HERALD_LOCAL_DYNAMODB", "dynalite"),
                   help="what serves the template's tables: dynalite (Node, infra/node_modules; "
                        "default) or moto; ignored with AWS_ENDPOINT_URL (default "
                        "$HERALD_LOCAL_DYNAMODB)")
    p.add_argument("--quiet", action="store_true",
                   help="no banner, REPORT lines or info logs (function output is still relayed)")
    return p


def _run(argv: list[str], adapter: Adapter, prog: str) -> int:
    args = _run_parser(adapter, prog).parse_args(argv)
    logging.basicConfig(stream=sys.stdout, format="[herald-local] %(levelname)s %(message)s",
                        level=logging.WARNING if args.quiet else logging.INFO)
    options = Options(
        template=args.template, profile=args.profile,
        host="127.0.0.1" if args.host == "localhost" else args.host,
        ws_port=args.ws_port, http_port=args.http_port, ready_file=args.ready_file,
        env=dict(args.env), visibility_timeout=args.visibility_timeout,
        timeout_scale=args.timeout_scale, max_instances=args.max_instances,
        idle_timeout_s=args.idle_timeout, max_connection_s=args.max_connection_seconds,
        quiet=args.quiet, binary_dir=args.binary_dir, binaries=dict(args.binary),
        management_auth=args.management_auth, iam=args.iam, dynamodb=args.dynamodb)
    return _run_loop(_serve(options, adapter, args.parent_pid))


def _run_loop(main: Any) -> int:
    """`asyncio.run` on uvloop's event loop (pinned in requirements.txt) where it is installed:
    the stack's loop carries every frame, invocation and proxied AWS call, and uvloop's
    transports cost less per call than asyncio's (docs/local-stack.md, "Throughput")."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    if sys.version_info < (3, 11):
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _serve(options: Options, adapter: Adapter, parent_pid: int | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    watchers = [asyncio.create_task(_watch_parent(parent_pid, stop))] if parent_pid else []
    stack = Stack(options, adapter)
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
            print(adapter.banner(stack.info, options), flush=True)
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


# --- clients of a running stack -----------------------------------------------------------

def _client_parser(adapter: Adapter, prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--ready-file", type=Path, default=adapter.ready_file)
    p.add_argument("--control-url",
                   help=f"e.g. http://127.0.0.1:PORT{adapter.control_path} (else from the ready file)")
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


def _token(argv: list[str], adapter: Adapter, prog: str) -> int:
    p = _client_parser(adapter, prog)
    adapter.add_token_arguments(p)
    args = p.parse_args(argv)
    body = json.dumps(adapter.token_request(args)).encode()
    status, out = _post(_control_url(args) + "/token", body)
    if status != 200:
        print(out.decode(errors="replace"), file=sys.stderr)
        return 1
    print(json.loads(out)["token"])
    return 0


def _invoke(argv: list[str], adapter: Adapter, prog: str) -> int:
    p = _client_parser(adapter, prog)
    p.add_argument("function", help="function: its Handler (e.g. dispatch), Binary or logical id")
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


# --- the grant report ---------------------------------------------------------------------

def _grants(argv: list[str], prog: str) -> int:
    """Summarize the usage files stacks wrote under $HERALD_LOCAL_GRANTS_DIR: exit 1 when a
    function made a call its role does not allow; list the grants no call used."""
    from .access import documented, summarize

    p = argparse.ArgumentParser(prog=prog, description=_grants.__doc__)
    p.add_argument("directory", type=Path)
    p.add_argument("--documented", type=Path,
                   help="a guide listing the grants kept without a test (docs/deploy.md)")
    p.add_argument("--calls", action="store_true", help="also list every (function, action, resource) used")
    args = p.parse_args(argv)
    lines = []
    for path in sorted(args.directory.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        print(f"grant report: no usage recorded under {args.directory}")
        return 1
    report = summarize(lines)
    guide = args.documented.read_text() if args.documented else ""
    stacks = sum(1 for line in lines if "universe" in line)
    print(f"grant report: {stacks} stacks, {len(report['calls'])} kinds of calls granted, "
          f"{len(report['denied'])} refused")
    if args.calls:
        for function, action, resource in report["calls"]:
            print(f"  used     {function:14} {action:34} {resource}")
    for function, grants in sorted(report["unused"].items()):
        for origin, action, resource in grants:
            note = "documented in " + args.documented.name if guide and documented(
                (origin, action, resource), guide) else "NOT USED by any test"
            print(f"  unused   {function:14} {action:34} {resource}  [{origin}] {note}")
    for function, action, resource, reason in report["denied"]:
        print(f"  DENIED   {function:14} {action:34} {resource} {reason}")
    return 1 if report["denied"] else 0
