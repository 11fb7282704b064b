"""The cost meter (herald_local/cost.py): AWS's unit arithmetic, the prices, and the counts a
known sequence of calls leaves on a running stack's meter."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import aiohttp
import pytest
from moto.dynamodb.models.dynamo_type import DynamoType

from conftest import Stack, poll
from herald_local import cost
from herald_local.cost import Meter, item_size, number_size, read_units, write_units
from herald_local.prices import PRICES, price


# --- item sizes, as AWS's "DynamoDB item sizes and formats" defines them --------------------------

@pytest.mark.parametrize("item, size", [
    ({"pk": {"S": "abc"}}, 2 + 3),
    ({"n": {"S": "é€"}}, 1 + 2 + 3),                                       # UTF-8 bytes
    ({"n": {"N": "123"}}, 1 + 2 + 1),                                      # 3 digits: 2 bytes + 1
    ({"n": {"N": "1000"}}, 1 + 1 + 1),                                     # trailing zeros trimmed
    ({"n": {"N": "0.0012"}}, 1 + 1 + 1),                                   # leading zeros trimmed
    ({"n": {"N": "-12345.678"}}, 1 + 4 + 1),
    ({"n": {"N": "0"}}, 1 + 0 + 1),
    ({"b": {"B": base64.b64encode(b"hello").decode()}}, 1 + 5),            # raw bytes, not base64
    ({"b": {"B": base64.b64encode(b"hi").decode()}}, 1 + 2),
    ({"t": {"BOOL": True}, "z": {"NULL": True}}, 1 + 1 + 1 + 1),
    ({"m": {"M": {}}}, 1 + 3),                                             # empty map: 3 bytes
    ({"m": {"M": {"a": {"S": "xy"}, "b": {"N": "1"}}}}, 1 + 3 + (1 + 1 + 2) + (1 + 1 + 2)),
    ({"l": {"L": [{"S": "a"}, {"BOOL": False}]}}, 1 + 3 + (1 + 1) + (1 + 1)),
    ({"l": {"L": [{"M": {"k": {"S": "v"}}}]}}, 1 + 3 + 1 + (3 + 1 + 1 + 1)),  # nested
    ({"ss": {"SS": ["a", "bc"]}, "ns": {"NS": ["1", "22"]}}, 2 + 3 + 2 + 2 + 2),
    ({"bs": {"BS": [base64.b64encode(b"abc").decode()]}}, 2 + 3),
])
def test_item_size(item: dict[str, Any], size: int) -> None:
    assert item_size(item) == size


def test_moto_items_measure_as_their_wire_form() -> None:
    """moto_patches/dynamodb_capacity.py measures moto's stored items (DynamoType), not the wire
    JSON."""
    item = {"pk": {"S": "p"}, "m": {"M": {"a": {"L": [{"N": "12"}, {"SS": ["x"]}]}}},
            "b": {"B": base64.b64encode(b"\x00\x01").decode()}, "n": {"N": "3.25"}}
    assert item_size({k: DynamoType(v) for k, v in item.items()}) == item_size(item)


def test_no_item_is_zero_bytes_and_unknown_types_fail() -> None:
    assert item_size(None) == 0 and item_size({}) == 0
    with pytest.raises(ValueError):
        item_size({"x": {"Q": "?"}})


def test_number_size_counts_significant_digits() -> None:
    assert number_size("12345678901234567890") == 11
    assert number_size("1.5E+3") == 2


# --- units -------------------------------------------------------------------------------------

def test_write_units_are_whole_kilobytes_at_least_one() -> None:
    assert [write_units(n) for n in (0, 1, 1024, 1025, 2560)] == [1, 1, 1, 2, 3]


def test_read_units_are_4_kb_halved_when_eventually_consistent() -> None:
    assert [read_units(n, True) for n in (0, 4096, 4097, 12288)] == [1, 1, 2, 3]
    assert [read_units(n, False) for n in (0, 4096, 4097)] == [0.5, 0.5, 1.0]


def test_message_and_request_increments() -> None:
    assert [cost.ws_messages(n) for n in (0, 2048, 32768, 32769, 100_000)] == [1, 1, 1, 2, 4]
    assert [cost.sqs_requests(n) for n in (0, 65536, 65537, 262144)] == [1, 1, 2, 4]
    assert [cost.http_requests(n) for n in (0, 524288, 524289)] == [1, 1, 2]


def test_gb_seconds_round_the_duration_up_to_the_millisecond() -> None:
    assert cost.gb_seconds(1024, 100) == pytest.approx(0.1)
    assert cost.gb_seconds(128, 0.2) == pytest.approx(0.125 * 0.001)
    assert cost.gb_seconds(512, 1000.5) == pytest.approx(0.5 * 1.001)


# --- prices ------------------------------------------------------------------------------------

def test_every_price_says_where_it_is_from() -> None:
    for key, p in PRICES.items():
        assert p.source.startswith("https://aws.amazon.com/"), key
        assert p.dollars > 0 and p.per > 0, key


def test_the_meter_prices_each_service() -> None:
    meter = Meter()
    meter.function("dispatch", 1024, "arm64")
    meter.function("api", 512, "x86_64")
    meter.invocation("dispatch", 1000)          # 1 GB-s on arm64
    meter.invocation("api", 2000)               # 1 GB-s on x86_64
    meter.dynamodb_call("PutItem", "t", 0, 3)
    meter.dynamodb_call("Query", "t", 1.5, 0)
    meter.sqs_call("SendMessage", "producers", 70_000)   # two 64 KB chunks
    meter.frame_out(40_000)                     # two 32 KB messages
    meter.frame_in(10)
    meter.http_request(10)
    meter.schedule_fired()
    dollars = meter.snapshot()["dollars"]
    assert dollars["lambda"] == pytest.approx(2 * price("lambda.request") + price("lambda.gb_second.arm64")
                                              + price("lambda.gb_second.x86_64"))
    assert dollars["dynamodb"] == pytest.approx(3 * 0.625e-6 + 1.5 * 0.125e-6)
    assert dollars["sqs"] == pytest.approx(2 * 0.40e-6)
    assert dollars["apigateway"] == pytest.approx(3 * 1e-6 + 1e-6, rel=1e-3)  # + a few µs of connection
    assert dollars["scheduler"] == pytest.approx(1e-6)
    meter.reset()
    assert meter.snapshot()["dollars"]["total"] == 0


def test_connection_time_counts_open_connections_from_the_reset() -> None:
    meter = Meter()
    meter.connected("a")
    meter._open["a"] -= 120                     # open for two minutes
    assert meter.snapshot()["usage"]["apigateway"]["connectionMinutes"] == pytest.approx(2, abs=0.01)
    meter.reset()
    assert meter.snapshot()["usage"]["apigateway"]["connectionMinutes"] == pytest.approx(0, abs=0.01)
    meter._open["a"] -= 60
    meter.disconnected("a")
    snap = meter.snapshot()["usage"]["apigateway"]
    assert snap["connectionMinutes"] == pytest.approx(1, abs=0.01) and snap["openConnections"] == 0


# --- the running stack -------------------------------------------------------------------------

def _dynamodb(snapshot: dict[str, Any], table: str) -> dict[str, tuple[int, float, float]]:
    return {row["operation"]: (row["calls"], row["readRequestUnits"], row["writeRequestUnits"])
            for row in snapshot["usage"]["dynamodb"]["byOperation"] if row["table"] == table}


def test_a_known_sequence_of_dynamodb_calls(stack: Stack) -> None:
    db = stack.client("dynamodb")
    table = stack.info["tables"]["ConnectionsTable"]
    pk = f"cost-{uuid.uuid4().hex}"                              # 36 bytes
    first = {"pk": {"S": pk}, "sk": {"S": "a"}, "data": {"S": "x" * 1500}}
    second = {"pk": {"S": pk}, "sk": {"S": "b"}, "data": {"S": "y" * 3100}}
    assert 1024 < item_size(first) <= 2048 and 3072 < item_size(second) <= 4096
    assert stack.control("DELETE", "/cost")[0] == 204

    db.put_item(TableName=table, Item=first)                        # new: 2 KB -> 2
    db.put_item(TableName=table, Item=second)                       # 4 KB -> 4
    db.update_item(TableName=table, Key={"pk": first["pk"], "sk": first["sk"]},   # shrinks: before counts, 2
                   UpdateExpression="REMOVE #d", ExpressionAttributeNames={"#d": "data"})
    db.update_item(TableName=table, Key={"pk": second["pk"], "sk": second["sk"]},  # grows to 5 KB: 5
                   UpdateExpression="SET more = :m", ExpressionAttributeValues={":m": {"S": "z" * 1000}})
    with pytest.raises(db.exceptions.ConditionalCheckFailedException):   # failed: the stored 5 KB
        db.put_item(TableName=table, Item=second, ConditionExpression="attribute_not_exists(pk)")
    db.get_item(TableName=table, Key={"pk": second["pk"], "sk": second["sk"]})       # 5 KB: 2 x 0.5
    db.get_item(TableName=table, Key={"pk": second["pk"], "sk": second["sk"]},       # strong: 2
                ConsistentRead=True, ProjectionExpression="pk")
    db.get_item(TableName=table, Key={"pk": {"S": "nothing"}, "sk": {"S": "here"}})  # none: 0.5
    # Both items (≈ 5.1 KB before the filter drops them, the projection aside) -> 2 units.
    page = db.query(TableName=table, KeyConditionExpression="pk = :p", ConsistentRead=True,
                    ExpressionAttributeValues={":p": {"S": pk}, ":no": {"S": "never"}},
                    # A key attribute may not be filtered on (DynamoDB refuses it).
                    ExpressionAttributeNames={"#d": "data"},
                    FilterExpression="#d = :no", ProjectionExpression="pk")
    assert page["Count"] == 0 and page["ScannedCount"] == 2
    db.batch_get_item(RequestItems={table: {"Keys": [{"pk": first["pk"], "sk": first["sk"]},
                                                     {"pk": second["pk"], "sk": second["sk"]}]}})  # 0.5 + 1
    db.batch_write_item(RequestItems={table: [                     # 1 (small) + 5 (the stored item)
        {"DeleteRequest": {"Key": {"pk": first["pk"], "sk": first["sk"]}}},
        {"DeleteRequest": {"Key": {"pk": second["pk"], "sk": second["sk"]}}}]})
    db.delete_item(TableName=table, Key={"pk": first["pk"], "sk": first["sk"]})   # gone: 1

    _, snapshot, _ = stack.control("GET", "/cost")
    assert _dynamodb(snapshot, table) == {
        "PutItem": (3, 0, 2 + 4 + 5),
        "UpdateItem": (2, 0, 2 + 5),
        "GetItem": (3, 1.0 + 2 + 0.5, 0),
        "Query": (1, 2, 0),
        "BatchGetItem": (1, 1.5, 0),
        "BatchWriteItem": (1, 0, 6),
        "DeleteItem": (1, 0, 1),
    }
    assert snapshot["dollars"]["dynamodb"] == pytest.approx(
        (2 + 4 + 5 + 2 + 5 + 6 + 1) * 0.625e-6 + (3.5 + 2 + 1.5) * 0.125e-6)


def test_sqs_sends_are_counted_in_64_kb_chunks(stack: Stack) -> None:
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName=f"cost-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    # The control API's send needs a queue of the template: one without a consumer, emptied after.
    dlq = stack.info["queues"]["ReminderDeadLetterQueue"]
    # Shaped as the invocation records other tests read off that queue, should one be left.
    marker = json.dumps({"requestPayload": {"cost": uuid.uuid4().hex}})
    assert stack.control("DELETE", "/cost")[0] == 204
    try:
        sqs.send_message(QueueUrl=url, MessageBody="small")
        sqs.send_message(QueueUrl=url, MessageBody="x" * 70_000)
        assert stack.control("POST", "/queues/ReminderDeadLetterQueue/messages", raw=marker.encode())[0] == 200
        rows = {(r["operation"], r["by"]): (r["calls"], r["requests"])
                for r in stack.control("GET", "/cost")[1]["usage"]["sqs"]["byOperation"]}
        assert rows[("SendMessage", "producers")] == (3, 1 + 2 + 1)
    finally:
        sqs.delete_queue(QueueUrl=url)
        for message in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []):
            if message["Body"] == marker:
                sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])


def test_websocket_messages_connection_time_and_lambda(stack: Stack) -> None:
    marker = uuid.uuid4().hex

    async def body() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(stack.ws_url(token="good", marker=marker))
            assert stack.control("DELETE", "/cost")[0] == 204
            await ws.send_str("hello")                   # in: 1; the route's answer, out: 1
            await ws.receive(timeout=10)
            record = stack.wait_record("ws-connect", lambda r: (r["event"].get("queryStringParameters") or {}).get("marker") == marker)
            connection_id = record["event"]["requestContext"]["connectionId"]
            await asyncio.to_thread(stack.management().post_to_connection,   # 40 KB: 2 messages
                                    ConnectionId=connection_id, Data=b"y" * 40_000)
            await ws.receive(timeout=10)
            await ws.close()

    asyncio.run(body())
    assert stack.invoke("echo", {"hi": 1})[0] == 200

    def counted() -> dict[str, Any] | None:
        snapshot = stack.control("GET", "/cost")[1]
        functions = snapshot["usage"]["lambda"]["byFunction"]
        done = snapshot["usage"]["apigateway"]["openConnections"] == 0 and "ws-disconnect" in functions
        return snapshot if done else None
    snapshot = poll(counted, what="the $disconnect invocation")
    gateway = snapshot["usage"]["apigateway"]
    assert (gateway["framesIn"], gateway["messagesIn"]) == (1, 1)
    assert (gateway["framesOut"], gateway["messagesOut"]) == (2, 1 + 2)
    assert 0 < gateway["connectionMinutes"] < 1
    functions = snapshot["usage"]["lambda"]["byFunction"]
    echo = functions["echo"]
    assert echo["invocations"] == 1
    assert echo["gbSeconds"] == pytest.approx(0.5 * echo["billedMs"] / 1000, abs=1e-4)  # 512 MB
    assert functions["ws-message"]["invocations"] == 1 and functions["ws-disconnect"]["invocations"] == 1
