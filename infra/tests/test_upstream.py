"""upstream.py, the AWS proxy's HTTP/1.1 client: answers read by length, by chunks and to the end
of a closed connection; connections kept and reused where the server keeps them; a kept
connection the server closed meanwhile is replaced, not an error."""

from __future__ import annotations

import asyncio

from aiohttp import web

from herald_local import upstream
from herald_local.upstream import Upstream


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def test_answers_of_every_framing_over_kept_connections() -> None:
    peers: list[object] = []

    async def sized(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        body = await request.read()
        return web.Response(body=b"got " + body, headers={"x-herald-capacity": "1 0 t"})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"a" * 70000, b"b", b"c"):
            await response.write(part)
        await response.write_eof()
        return response

    async def closing(request: web.Request) -> web.Response:
        return web.Response(body=b"bye", headers={"Connection": "close"})

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/sized", sized)
        app.router.add_get("/chunked", chunked)
        app.router.add_get("/closing", closing)
        runner, base = await _serve(app)
        client = Upstream(base)
        try:
            for n in range(3):
                status, headers, body = await client.request("POST", "/sized", [("X-A", "1")], f"n{n}".encode())
                assert (status, body) == (200, f"got n{n}".encode())
                assert ("x-herald-capacity", "1 0 t") in [(k.lower(), v) for k, v in headers]
            assert len(set(peers)) == 1   # one connection, kept
            status, _, body = await client.request("GET", "/chunked", [], b"")
            assert (status, body) == (200, b"a" * 70000 + b"bc")
            status, _, body = await client.request("GET", "/closing", [], b"")
            assert (status, body) == (200, b"bye")
            big = b"x" * 200_000
            assert (await client.request("POST", "/sized", [], big))[2] == b"got " + big
        finally:
            client.close()
            await runner.cleanup()

    asyncio.run(run())


def test_a_kept_connection_closed_by_the_server_is_replaced(monkeypatch) -> None:
    async def run() -> None:
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", ok)
        runner, base = await _serve(app)
        client = Upstream(base)
        try:
            assert (await client.request("GET", "/", [], b""))[2] == b"ok"
            # The kept connection breaks (as when Node's server drops it after 5 idle seconds).
            for _, writer, _ in client._idle:
                writer.transport.abort()
            await asyncio.sleep(0.05)
            assert (await client.request("GET", "/", [], b""))[2] == b"ok"
            # One idle past IDLE_SECONDS is not reused at all.
            monkeypatch.setattr(upstream, "IDLE_SECONDS", 0.0)
            await asyncio.sleep(0.01)
            assert (await client.request("GET", "/", [], b""))[2] == b"ok"
        finally:
            client.close()
            await runner.cleanup()

    asyncio.run(run())
