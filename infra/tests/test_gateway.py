"""WebSocket API as API Gateway serves it: handshake + authorizer, routes, @connections, limits."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import boto3
import pytest

from conftest import Stack, poll, start_stack


def run(body: Callable[[aiohttp.ClientSession], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            return await body(session)
    return asyncio.run(main())


async def connect(stack: Stack, session: aiohttp.ClientSession, **query: str) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(stack.ws_url(token="good", **query))


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


def connection_id_of(stack: Stack, marker: str) -> str:
    """The id of the connection whose $connect event carried ?marker=..."""
    record = stack.wait_record("ws-connect", lambda r: (r["event"].get("queryStringParameters") or {}).get("marker") == marker)
    return record["event"]["requestContext"]["connectionId"]


# --- handshake ---------------------------------------------------------------------------

@pytest.mark.parametrize("token, status", [("deny", 403), ("nope", 401), ("boom", 500)])
def test_authorizer_refusals(stack: Stack, token: str, status: int) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(stack.ws_url(token=token))
        assert err.value.status == status
    run(body)


def test_authorizer_and_connect_events(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await session.ws_connect(stack.ws_url(token="good", marker="events", tag="a") + "&tag=b",
                                      headers={"X-Custom-Header": "Abc"})
        await ws.close()
    run(body)
    connect = stack.wait_record("ws-connect", lambda r: (r["event"].get("queryStringParameters") or {}).get("marker") == "events")
    event = connect["event"]
    conn_id = event["requestContext"]["connectionId"]
    auth = stack.wait_record("authorizer", lambda r: r["event"]["requestContext"]["connectionId"] == conn_id)["event"]
    assert auth["type"] == "REQUEST"
    assert auth["methodArn"].startswith("arn:aws:execute-api:us-east-1:")
    assert auth["methodArn"].endswith("/prod/$connect")
    assert auth["headers"]["X-Custom-Header"] == "Abc"              # client casing kept
    assert auth["multiValueQueryStringParameters"]["tag"] == ["a", "b"]
    assert auth["queryStringParameters"]["tag"] == "b"
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
    assert ctx["stage"] == "prod" and isinstance(ctx["connectedAt"], int)
    assert isinstance(ctx["requestTimeEpoch"], int)
    assert ctx["authorizer"]["principalId"] == "u1"
    assert ctx["authorizer"]["tenant"] == "acme"
    assert isinstance(ctx["authorizer"]["integrationLatency"], int)
    assert event["headers"]["X-Custom-Header"] == "Abc"
    assert event["multiValueHeaders"]["X-Custom-Header"] == ["Abc"]


def test_subprotocol_token_and_echo(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await session.ws_connect(stack.info["websocketUrl"], protocols=["herald.v1", "good"])
        assert ws.protocol == "herald.v1"
        await ws.close()
    run(body)


def test_connect_integration_can_refuse(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await connect(stack, session, reject="429")
        assert err.value.status == 429
    run(body)


def test_connect_function_cannot_post_to_its_own_connection(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session, postself="1", marker="postself")
        await ws.close()
    run(body)
    record = stack.wait_record("ws-connect", lambda r: (r["event"].get("queryStringParameters") or {}).get("marker") == "postself")
    assert record["selfPost"] == "GoneException"


def test_plain_http_get_is_not_an_upgrade(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        async with session.get(stack.info["websocketUrl"].replace("ws://", "http://")) as resp:
            assert resp.status == 426
    run(body)


# --- routes ------------------------------------------------------------------------------

def test_route_selection_and_route_responses(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session)
        await ws.send_str(json.dumps({"action": "join", "group": "g"}))
        reply = await receive_json(ws)
        assert reply["route"] == "join"
        assert reply["authorizer"]["user"] == "u1" and reply["authorizer"]["principalId"] == "u1"
        await ws.send_str(json.dumps({"action": "nothing-like-it"}))
        assert (await receive_json(ws))["route"] == "$default"
        await ws.send_str("not json")
        assert (await receive_json(ws)) ["route"] == "$default"
        await ws.send_bytes(b"\x00\x01")
        reply = await receive_json(ws)
        assert reply["route"] == "$default" and reply["isBase64Encoded"] is True
        assert base64.b64decode(reply["body"]) == b"\x00\x01"
        await ws.send_str(json.dumps({"action": "join", "crash": True}))
        error = await receive_json(ws)
        assert error["message"] == "Internal server error" and error["connectionId"]
        await ws.close()
    run(body)


def test_message_event_shape(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session)
        await ws.send_str(json.dumps({"action": "join", "marker": "shape"}))
        await receive_json(ws)
        await ws.close()
    run(body)
    event = stack.wait_record("ws-echo", lambda r: "shape" in (r["event"].get("body") or ""))["event"]
    ctx = event["requestContext"]
    assert ctx["eventType"] == "MESSAGE" and ctx["routeKey"] == "join"
    assert ctx["messageId"] and ctx["requestId"] and ctx["apiId"] and ctx["domainName"]
    assert event["isBase64Encoded"] is False


def test_one_way_route_posts_while_invoked(stack: Stack) -> None:
    """The function posts back through @connections during its own invocation (no deadlock),
    and a route without a route response sends nothing itself."""
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session)
        await ws.send_str(json.dumps({"action": "fire", "times": 3}))
        assert [await receive_json(ws) for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
        await ws.send_str(json.dumps({"action": "join"}))
        assert (await receive_json(ws))["route"] == "join"   # nothing from "fire" came between
        await ws.close()
    run(body)


# --- @connections ------------------------------------------------------------------------

def test_management_post_get_delete(stack: Stack) -> None:
    api = stack.management()

    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session, marker="mgmt")
        conn_id = connection_id_of(stack, "mgmt")
        await asyncio.to_thread(api.post_to_connection, ConnectionId=conn_id, Data=b'{"hi":1}')
        assert await receive_json(ws) == {"hi": 1}
        await asyncio.to_thread(api.post_to_connection, ConnectionId=conn_id, Data=b"\xff\x00")
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == b"\xff\x00"
        info = await asyncio.to_thread(api.get_connection, ConnectionId=conn_id)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        assert info["ConnectedAt"] <= info["LastActiveAt"]
        with pytest.raises(api.exceptions.PayloadTooLargeException):
            await asyncio.to_thread(api.post_to_connection, ConnectionId=conn_id, Data=b"x" * (128 * 1024 + 1))
        await asyncio.to_thread(api.delete_connection, ConnectionId=conn_id)
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1000
        for call in (lambda: api.post_to_connection(ConnectionId=conn_id, Data=b"x"),
                     lambda: api.get_connection(ConnectionId=conn_id),
                     lambda: api.delete_connection(ConnectionId=conn_id)):
            with pytest.raises(api.exceptions.GoneException):
                await asyncio.to_thread(call)
        return conn_id

    conn_id = run(body)
    event = stack.wait_record("ws-disconnect", lambda r: r["event"]["requestContext"]["connectionId"] == conn_id)["event"]
    assert event["requestContext"]["disconnectStatusCode"] == 1000
    assert event["requestContext"]["authorizer"]["user"] == "u1"


def test_management_calls_must_be_signed(stack: Stack) -> None:
    """IAM auth, as on AWS: unsigned or wrongly signed calls get 403 and deliver nothing."""
    stranger = boto3.client("apigatewaymanagementapi", endpoint_url=stack.info["managementEndpoint"],
                            region_name=stack.info["region"], aws_access_key_id="x",
                            aws_secret_access_key="x")

    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session, marker="signed")
        conn_id = connection_id_of(stack, "signed")
        url = f"{stack.info['managementEndpoint']}/@connections/{conn_id}"
        async with session.post(url, data=b"unsigned") as resp:
            assert resp.status == 403
            assert resp.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        with pytest.raises(stranger.exceptions.ClientError) as err:
            await asyncio.to_thread(stranger.post_to_connection, ConnectionId=conn_id, Data=b"x")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(stranger.exceptions.ClientError):
            await asyncio.to_thread(stranger.delete_connection, ConnectionId=conn_id)
        await asyncio.to_thread(stack.management().post_to_connection, ConnectionId=conn_id,
                                Data=b'{"signed":true}')
        assert await receive_json(ws) == {"signed": True}   # nothing refused got through first
        await ws.close()

    run(body)


def test_unknown_connection_is_gone_with_error_type(stack: Stack) -> None:
    api = stack.management()
    with pytest.raises(api.exceptions.GoneException) as err:
        api.post_to_connection(ConnectionId="AAAAAAAAAAAAAAA=", Data=b"x")
    headers = err.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert err.value.response["Error"]["Message"]
    assert headers["x-amzn-errortype"] == "GoneException"


def test_client_close_and_drop_fire_disconnect(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> tuple[str, str]:
        ws = await connect(stack, session, marker="closer")
        closer = connection_id_of(stack, "closer")
        await ws.close(code=4001, message=b"bye")
        dropped_ws = await connect(stack, session, marker="dropped")
        dropped = connection_id_of(stack, "dropped")
        listed = stack.control("GET", "/connections")[1]
        assert {"connectionId": dropped, "user": "u1", "tenant": "acme"}.items() <= \
            next(c for c in listed if c["connectionId"] == dropped).items()
        assert stack.control("POST", f"/connections/{dropped}/drop")[0] == 204
        msg = await dropped_ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
        return closer, dropped

    closer, dropped = run(body)
    closed = stack.wait_record("ws-disconnect", lambda r: r["event"]["requestContext"]["connectionId"] == closer)
    assert closed["event"]["requestContext"]["disconnectStatusCode"] == 4001
    assert closed["event"]["requestContext"]["disconnectReason"] == "bye"
    cut = stack.wait_record("ws-disconnect", lambda r: r["event"]["requestContext"]["connectionId"] == dropped)
    assert cut["event"]["requestContext"]["disconnectStatusCode"] == 1006
    assert stack.control("POST", f"/connections/{dropped}/drop")[0] == 404


def test_frame_over_32kb_closes_with_1009(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session)
        payload = json.dumps({"action": "join", "pad": ""})
        await ws.send_str(payload[:-2] + "x" * (32 * 1024 - len(payload)) + '"}')  # exactly 32 KB
        assert (await receive_json(ws))["route"] == "join"
        await ws.send_str("x" * (32 * 1024 + 1))
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009
    run(body)


# --- faults ------------------------------------------------------------------------------

def test_post_faults(stack: Stack) -> None:
    api = stack.management()

    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session, marker="faults")
        conn_id = connection_id_of(stack, "faults")
        assert stack.control("POST", "/faults/posts", {"connectionIds": [conn_id], "status": 429, "count": 1})[0] == 204
        with pytest.raises(api.exceptions.LimitExceededException):
            await asyncio.to_thread(api.post_to_connection, ConnectionId=conn_id, Data=b"1")
        await asyncio.to_thread(api.post_to_connection, ConnectionId=conn_id, Data=b"2")
        assert (await ws.receive(timeout=10)).data == "2"
        assert stack.control("POST", "/faults/posts", {"rate": 1.0, "status": 503})[0] == 204
        with pytest.raises(api.exceptions.ClientError) as err:
            await asyncio.to_thread(api.post_to_connection, ConnectionId=conn_id, Data=b"3")
        assert err.value.response["Error"]["Code"] == "InternalServerErrorException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert stack.control("DELETE", "/faults")[0] == 204
        await asyncio.to_thread(api.post_to_connection, ConnectionId=conn_id, Data=b"4")
        assert (await ws.receive(timeout=10)).data == "4"
        await ws.close()
    run(body)
    assert stack.control("POST", "/faults/posts", {"rate": 2})[0] == 400


def test_many_concurrent_posts(stack: Stack) -> None:
    """A keep-alive pool posting concurrently: every frame arrives, none is refused."""
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session, marker="bulk")
        conn_id = connection_id_of(stack, "bulk")
        url = f"{stack.info['managementEndpoint']}/@connections/{conn_id}"

        async def post(i: int) -> int:
            data = str(i).encode()
            async with session.post(url, data=data, headers=stack.sign("POST", url, data)) as resp:
                return resp.status

        statuses = await asyncio.gather(*(post(i) for i in range(300)))
        assert set(statuses) == {200}
        got = {int((await ws.receive(timeout=10)).data) for _ in range(300)}
        assert got == set(range(300))
        await ws.close()
    run(body)


def test_connections_listing_shows_only_open_ones(stack: Stack) -> None:
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await connect(stack, session, marker="listing")
        conn_id = connection_id_of(stack, "listing")
        assert conn_id in {c["connectionId"] for c in stack.control("GET", "/connections")[1]}
        await ws.close()
        poll(lambda: conn_id not in {c["connectionId"] for c in stack.control("GET", "/connections")[1]},
             what="the closed connection to leave the listing")
    run(body)


def test_idle_and_maximum_connection_time(tmp_path_factory: pytest.TempPathFactory) -> None:
    """API Gateway closes idle connections (10 min) and old ones (2 h) with 1001; both limits
    are configurable, so a stack with tiny ones shows the behaviour."""
    directory = tmp_path_factory.mktemp("short-lived")
    proc, info = start_stack(directory, "--idle-timeout", "1", "--max-connection-seconds", "2.5",
                             "--quiet")
    short = Stack(proc, info, directory)
    try:
        async def body(session: aiohttp.ClientSession) -> None:
            loop = asyncio.get_running_loop()
            idle = await connect(short, session)
            before_busy = loop.time()
            busy = await connect(short, session)

            async def keep_busy() -> None:
                # A frame every 0.2 s whatever the replies take (the idle timer counts from the
                # last client frame), so only the maximum age can end this connection.
                while not busy.closed:
                    try:
                        await busy.send_str(json.dumps({"action": "join"}))
                    except (ConnectionResetError, RuntimeError):
                        return  # closed between the check and the send
                    await asyncio.sleep(0.2)

            sender = asyncio.create_task(keep_busy())
            msg = await idle.receive(timeout=10)
            assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 1001, "Going away")
            while True:
                msg = await busy.receive(timeout=10)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
            sender.cancel()
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            # Closed by age: not before 2.5 s after it connected (the server's clock started
            # after `before_busy`), however loaded the machine is.
            assert loop.time() - before_busy >= 2.5
        run(body)
        codes = [r["event"]["requestContext"]["disconnectStatusCode"] for r in
                 poll(lambda: short.records("ws-disconnect") if len(short.records("ws-disconnect")) == 2 else None,
                      what="two $disconnect events")]
        assert codes == [1001, 1001]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
