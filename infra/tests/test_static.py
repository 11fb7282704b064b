"""The adapter's static directories (Herald's: client/, for the demo page), and what the control
API offers such a page: the endpoints listing, SendMessage to the stack's queues and a peek at a
dead-letter queue."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

from conftest import Stack, poll
from herald_local.static import StaticDir, content_type

REPO = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    """GET without following redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def test_static_dir_serves_only_its_own_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "demo").mkdir(parents=True)
    (site / "demo" / "index.html").write_text("<p>demo</p>")
    (site / "lib.mjs").write_text("export const x = 1;")
    (tmp_path / "secret.txt").write_text("outside")
    (site / "link.txt").symlink_to(tmp_path / "secret.txt")

    async def run() -> dict[str, tuple[int, str, str]]:
        app = web.Application()
        StaticDir("/site", site).add_routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        server = web.TCPSite(runner, "127.0.0.1", 0)
        await server.start()
        port = runner.addresses[0][1]
        seen = {}
        try:
            async with aiohttp.ClientSession() as session:
                for path in ("/site/demo/", "/site/demo", "/site/lib.mjs", "/site/nope.js",
                             "/site/link.txt", "/site/%2e%2e/secret.txt",
                             "/site/"):
                    url = f"http://127.0.0.1:{port}{path}"
                    async with session.get(url, allow_redirects=False) as r:
                        seen[path] = (r.status, r.headers.get("Content-Type", ""),
                                      r.headers.get("Location", "") if r.status == 302 else await r.text())
        finally:
            await runner.cleanup()
        return seen

    seen = asyncio.run(run())
    assert seen["/site/demo/"][:2] == (200, "text/html") and seen["/site/demo/"][2] == "<p>demo</p>"
    # Without the slash, ./demo.js in the page would resolve against /site/: redirect first.
    assert seen["/site/demo"] == (302, seen["/site/demo"][1], "/site/demo/")
    assert seen["/site/lib.mjs"][:2] == (200, "text/javascript")   # browsers need it for modules
    assert seen["/site/nope.js"][0] == 404
    assert seen["/site/link.txt"][0] == 404          # a symlink out of the directory
    assert seen["/site/%2e%2e/secret.txt"][0] == 404
    assert seen["/site/"][0] == 404                  # no listing, no index.html there
    assert content_type(Path("x.css")) == "text/css"


def test_herald_serves_the_client_and_its_demo_page(stack: Stack) -> None:
    base = stack.info["staticUrls"]["/client"]
    assert base.startswith(stack.info["controlUrl"].rsplit("/", 1)[0]), "same origin as the control API"
    status, body, headers = get(base + "herald.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript"
    assert body == (REPO / "client" / "herald.js").read_bytes()
    assert headers["Cache-Control"] == "no-store"
    status, body, headers = get(base + "demo/")
    assert status == 200 and headers["Content-Type"] == "text/html"
    assert b'src="demo.js"' in body
    assert get(base + "demo")[0] == 302


def test_endpoints_lists_addresses_only(stack: Stack) -> None:
    status, body, _ = stack.control("GET", "/endpoints")
    assert status == 200
    assert body["websocketUrl"] == stack.info["websocketUrl"]
    assert body["httpUrl"] == stack.info["httpUrl"]
    assert body["queues"] == stack.info["queues"]
    assert body["staticUrls"] == stack.info["staticUrls"]
    text = json.dumps(body)
    for secret in ("hs256Secret", "devToken", "managementCredentials", "jwks"):
        assert secret not in text


def test_send_to_a_queue_reaches_its_event_source(stack: Stack) -> None:
    marker = f"sent-{uuid.uuid4().hex}"
    status, body, _ = stack.control("POST", "/queues/DispatchQueue/messages", raw=marker.encode())
    assert status == 200 and body["messageId"]
    poll(lambda: any(marker in r["body"] for batch in stack.records("sqs")
                     for r in batch["event"]["Records"]), timeout=10, what="the message at dispatch")
    status, body, _ = stack.control("POST", "/queues/NoSuchQueue/messages", raw=b"x")
    assert status == 404 and "DispatchQueue" in body["error"]
    status, body, _ = stack.control("POST", "/queues/DispatchQueue/messages", raw=b"")
    assert status == 400


def test_peek_leaves_dead_letters_in_place(stack: Stack) -> None:
    sqs = stack.client("sqs")
    marker = f"dead-{uuid.uuid4().hex}"
    sqs.send_message(QueueUrl=stack.info["queues"]["RetryDeadLetterQueue"], MessageBody=marker,
                     MessageAttributes={"reason": {"DataType": "String", "StringValue": "bad_request"}})
    for _ in range(2):  # still there the second time: a peek puts back what it saw
        status, body, _ = stack.control("GET", "/queues/RetryDeadLetterQueue/messages")
        assert status == 200
        [mine] = [m for m in body["messages"] if m["body"] == marker]
        assert mine["attributes"] == {"reason": "bad_request"} and mine["sentAt"] > 0
    # A receive on a queue with a redrive policy counts toward its maxReceiveCount: refused.
    status, body, _ = stack.control("GET", "/queues/DispatchQueue/messages")
    assert status == 409 and "redrive" in body["error"]
    assert stack.control("GET", "/queues/NoSuchQueue/messages")[0] == 404
