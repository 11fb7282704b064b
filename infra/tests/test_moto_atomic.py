"""The local stack's moto applies DynamoDB conditional writes atomically (moto_server.py).

Plain moto lost 15 of ~130 concurrent conditional updates in this test: two writers passed the
same condition and were handed the same old item. DynamoDB never does that, and Herald's rate
budgets, presence sets and collapse keys rely on it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import boto3
import pytest
from botocore.exceptions import ClientError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "herald_local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _client(url: str):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")


def test_concurrent_conditional_updates_never_share_an_old_item(moto_url: str) -> None:
    db = _client(moto_url)
    db.create_table(TableName="race", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")
    lost = 0
    for _ in range(5):
        db.delete_item(TableName="race", Key={"pk": {"S": "k"}})
        olds: list[str | None] = []
        lock = threading.Lock()

        def write(i: int) -> None:
            try:
                out = _client(moto_url).update_item(
                    TableName="race", Key={"pk": {"S": "k"}}, UpdateExpression="SET c = :c",
                    ConditionExpression="attribute_not_exists(c) OR c < :c",
                    ExpressionAttributeValues={":c": {"N": str(i)}}, ReturnValues="ALL_OLD")
            except ClientError:
                return  # a later value was there first: the condition did its job
            with lock:
                olds.append(out.get("Attributes", {}).get("c", {}).get("N"))

        threads = [threading.Thread(target=write, args=(i,)) for i in range(1, 41)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Each success moved the value on from a distinct old value; a repeat is a lost update.
        lost += sum(n - 1 for n in Counter(olds).values() if n > 1)
    assert lost == 0


def test_a_query_reads_its_partition_as_dynamodb_does(moto_url: str) -> None:
    """moto_server.py has a table Query read its partition instead of sorting the whole table:
    what a Query returns must stay what DynamoDB returns — that partition's items in range-key
    order either way, pages that continue where the last ended, key conditions and filters —
    while index queries and scans still see every partition."""
    db = _client(moto_url)
    db.create_table(
        TableName="log",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "g")],
        GlobalSecondaryIndexes=[{"IndexName": "byg", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "ALL"}}],
        BillingMode="PAY_PER_REQUEST")
    for p in ("a", "b", "c"):
        for i in (3, 1, 4, 0, 2):  # written out of order
            db.put_item(TableName="log", Item={"pk": {"S": p}, "sk": {"S": f"{i:02d}"}, "g": {"S": "all"},
                                               "odd": {"BOOL": i % 2 == 1}})

    def query(**kw: object) -> list[str]:
        out = db.query(TableName="log", KeyConditionExpression="pk = :p",
                       ExpressionAttributeValues={":p": {"S": "b"}}, **kw)
        return [item["pk"]["S"] + item["sk"]["S"] for item in out["Items"]]

    assert query() == ["b00", "b01", "b02", "b03", "b04"]
    assert query(ScanIndexForward=False) == ["b04", "b03", "b02", "b01", "b00"]
    first = db.query(TableName="log", KeyConditionExpression="pk = :p",
                     ExpressionAttributeValues={":p": {"S": "b"}}, Limit=2)
    assert first["LastEvaluatedKey"] == {"pk": {"S": "b"}, "sk": {"S": "01"}}
    assert query(ExclusiveStartKey=first["LastEvaluatedKey"]) == ["b02", "b03", "b04"]
    after = db.query(TableName="log", KeyConditionExpression="pk = :p AND sk > :s",
                     ExpressionAttributeValues={":p": {"S": "c"}, ":s": {"S": "02"}})
    assert [i["sk"]["S"] for i in after["Items"]] == ["03", "04"]
    odd = db.query(TableName="log", KeyConditionExpression="pk = :p", FilterExpression="odd = :t",
                   ExpressionAttributeValues={":p": {"S": "a"}, ":t": {"BOOL": True}})
    assert [i["sk"]["S"] for i in odd["Items"]] == ["01", "03"]
    none = db.query(TableName="log", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "zz"}})
    assert none["Items"] == []
    assert len(db.query(TableName="log", IndexName="byg", KeyConditionExpression="g = :g",
                        ExpressionAttributeValues={":g": {"S": "all"}})["Items"]) == 15
    assert len(db.scan(TableName="log")["Items"]) == 15


def test_item_answers_keep_every_attribute_type_and_number_order(moto_url: str) -> None:
    """moto_server.py writes item operations' answers with json.dumps instead of moto's shape
    serializer, and sorts a partition on native values: every attribute type must come back as
    it was written, through every item operation, and a numeric range key must page in number
    order (9 before 10, which string order would swap) in both directions."""
    db = _client(moto_url)
    db.create_table(
        TableName="types",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "n", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST")
    every = {
        "s": {"S": "ünï €"}, "num": {"N": "-12.5"}, "b": {"B": b"\x00\xffbin"},
        "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"\x01", b"\x02"]},
        "l": {"L": [{"S": "a"}, {"N": "1"}, {"M": {"k": {"BOOL": False}}}, {"B": b"\x03"}]},
        "m": {"M": {"inner": {"L": [{"NULL": True}]}, "bin": {"B": b"\x04"}}},
        "t": {"BOOL": True}, "z": {"NULL": True},
    }

    def normal(item: dict) -> dict:
        # boto3 hands sets back as lists in any order
        return {k: ({t: sorted(v)} if t in ("SS", "NS", "BS") else {t: v}) for k, v in item.items()
                for t, v in [next(iter(v.items()))]}

    for n in (10, 9, 100, 1, 2):
        db.put_item(TableName="types", Item={"pk": {"S": "p"}, "n": {"N": str(n)}, **every})
    key = {"pk": {"S": "p"}, "n": {"N": "9"}}
    written = normal({**key, **every})
    assert normal(db.get_item(TableName="types", Key=key)["Item"]) == written
    assert normal(db.query(TableName="types", KeyConditionExpression="pk = :p",
                           ExpressionAttributeValues={":p": {"S": "p"}})["Items"][2]) == written
    assert sorted(normal(i)["n"]["N"] for i in db.scan(TableName="types")["Items"]) == ["1", "10", "100", "2", "9"]
    got = db.batch_get_item(RequestItems={"types": {"Keys": [key]}})["Responses"]["types"]
    assert [normal(i) for i in got] == [written]
    got = db.transact_get_items(TransactItems=[{"Get": {"TableName": "types", "Key": key}}])["Responses"]
    assert [normal(r["Item"]) for r in got] == [written]
    new = db.update_item(TableName="types", Key=key, UpdateExpression="SET s = :s",
                         ExpressionAttributeValues={":s": {"S": "new"}}, ReturnValues="ALL_NEW")
    assert normal(new["Attributes"]) == {**written, "s": {"S": "new"}}
    old = db.delete_item(TableName="types", Key=key, ReturnValues="ALL_OLD")
    assert normal(old["Attributes"]) == {**written, "s": {"S": "new"}}
    db.put_item(TableName="types", Item={**key, **every})

    def pages(forward: bool) -> list[list[str]]:
        out, kw = [], {}
        while True:
            page = db.query(TableName="types", KeyConditionExpression="pk = :p", Limit=2,
                            ExpressionAttributeValues={":p": {"S": "p"}}, ScanIndexForward=forward, **kw)
            out.append([i["n"]["N"] for i in page["Items"]])
            if "LastEvaluatedKey" not in page:
                return out
            kw = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    assert pages(True) == [["1", "2"], ["9", "10"], ["100"]]
    assert pages(False) == [["100", "10"], ["9", "2"], ["1"]]
    counted = db.query(TableName="types", KeyConditionExpression="pk = :p AND n BETWEEN :a AND :b",
                       ExpressionAttributeValues={":p": {"S": "p"}, ":a": {"N": "2"}, ":b": {"N": "10"}},
                       Select="COUNT", ReturnConsumedCapacity="TOTAL")
    assert counted["Count"] == 3 and "Items" not in counted
    assert counted["ConsumedCapacity"]["TableName"] == "types"
    with pytest.raises(ClientError) as refused:
        db.put_item(TableName="types", Item={**key, **every}, ConditionExpression="attribute_not_exists(pk)")
    assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"


def test_sqs_keeps_its_timing_rules(moto_url: str) -> None:
    """The launcher reads SQS's clock directly instead of through moto's datetime arithmetic
    (and retention from the queue's field): delays and visibility timeouts must still hold, and a
    message inside its retention period is handed out."""
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    url = sqs.create_queue(QueueName="timing", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="now")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in got] == ["now"]
    # Received, so invisible until its visibility timeout ends; the delayed one is due by then.
    time.sleep(1.3)
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert sorted(m["Body"] for m in again) == ["delayed", "now"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "2"


def test_no_message_sent_while_others_are_deleted_is_lost(moto_url: str) -> None:
    """moto's SQS `delete_message` rebuilds the queue's message list and puts the new list in
    place without the lock `SendMessage` appends under: a message sent meanwhile went into the
    old list and was gone, though SendMessage had answered. The full chaos run lost whole
    dispatch batches that way (never claimed, never dead-lettered). moto_server.py deletes
    under the queue's lock."""
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    url = sqs.create_queue(QueueName="busy")["QueueUrl"]
    # A backlog (the chaos run's dispatch queue held thousands) makes each delete's rebuild long
    # enough for sends to land inside it.
    for start in range(0, 2000, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"old-{start + i}"} for i in range(10)])
    sent: list[str] = []
    received: set[str] = set()
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def send(worker: int) -> None:
        client = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x")
        for i in range(60):
            body = f"new-{worker}-{i}"
            client.send_message(QueueUrl=url, MessageBody=body)
            with lock:
                sent.append(body)

    def consume() -> None:
        client = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x")
        idle = 0
        while sending.is_set() or idle < 3:
            got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                         VisibilityTimeout=60).get("Messages", [])
            idle = 0 if got else idle + 1
            if got:
                client.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            with lock:
                received.update(m["Body"] for m in got)

    senders = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for t in senders + consumers:
        t.start()
    for t in senders:
        t.join()
    sending.clear()
    for t in consumers:
        t.join()
    lost = [body for body in sent if body not in received]
    assert not lost, f"{len(lost)} of {len(sent)} sent messages vanished: {lost[:5]}"
