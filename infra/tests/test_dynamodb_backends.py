"""What the local stack's DynamoDB back-ends answer, each checked against DynamoDB's behaviour:
dynalite as the stack runs it (`dynalite_server.js`, the default) and the patched moto
(`--dynamodb moto`; herald_local/moto_patches). Both run as the stack starts them.

Plain moto lost 15 of ~130 concurrent conditional updates in the first test: two writers passed
the same condition and were handed the same old item. DynamoDB never does that, and Herald's
rate budgets, presence sets and collapse keys rely on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import free_port, serving
from herald_local import aws

BACKEND_OF: dict[str, str] = {}


def _start(kind: str, port: int) -> subprocess.Popen:
    if kind == "moto":
        cmd = [sys.executable, "-m", "herald_local.moto_server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        if shutil.which("node") is None or not (aws.DYNALITE / "cli.js").is_file():
            pytest.fail(f"dynalite is not installed ({aws.DYNALITE}): make venv installs it")
        cmd = ["node", str(aws.DYNALITE_SERVER), str(aws.DYNALITE), "--host", "127.0.0.1",
               "--port", str(port), "--createTableMs", "0", "--deleteTableMs", "0"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.fixture(scope="module", params=["dynalite", "moto"])
def backend(request):
    port = free_port()
    proc = _start(request.param, port)
    url = serving(proc, port, request.param)
    BACKEND_OF[url] = request.param
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


def _client(url: str):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")


def _create_table(db: Any, **table: Any) -> None:
    db.create_table(**table)
    aws.wait_active(db, table["TableName"])


def test_concurrent_conditional_updates_never_share_an_old_item(backend: str) -> None:
    db = _client(backend)
    _create_table(db, TableName="race", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")
    lost = 0
    for _ in range(5):
        db.delete_item(TableName="race", Key={"pk": {"S": "k"}})
        olds: list[str | None] = []
        lock = threading.Lock()

        def write(i: int) -> None:
            try:
                out = _client(backend).update_item(
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


def test_a_query_reads_its_partition_as_dynamodb_does(backend: str) -> None:
    """moto_patches/dynamodb_partition_query.py has a table Query read its partition instead of
    sorting the whole table: what a Query returns must stay what DynamoDB returns — that partition's items in range-key
    order either way, pages that continue where the last ended, key conditions and filters —
    while index queries and scans still see every partition."""
    db = _client(backend)
    _create_table(
        db,
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


def test_item_answers_keep_every_attribute_type_and_number_order(backend: str) -> None:
    """moto_patches writes item operations' answers with json.dumps instead of moto's shape
    serializer, and sorts a partition on native values; dynalite is another implementation: every attribute type must come back as
    it was written, through every item operation, and a numeric range key must page in number
    order (9 before 10, which string order would swap) in both directions."""
    db = _client(backend)
    _create_table(
        db,
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
    if BACKEND_OF[backend] == "moto":   # dynalite serves no transactions (docs/local-stack.md)
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


def _failed_item(call) -> dict | None:
    with pytest.raises(ClientError) as failed:
        call()
    assert failed.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    return failed.value.response.get("Item")


def test_a_failed_condition_answers_the_stored_item(backend: str) -> None:
    """ReturnValuesOnConditionCheckFailure=ALL_OLD: the error carries the stored item (Herald's
    rate budgets read it to answer "retry after"); dynalite_server.js adds it to dynalite."""
    db = _client(backend)
    _create_table(db, TableName="budgets", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")
    stored = {"pk": {"S": "b"}, "tat": {"N": "100"}}
    db.put_item(TableName="budgets", Item=stored)
    now = {":now": {"N": "50"}}
    assert _failed_item(lambda: db.update_item(
        TableName="budgets", Key={"pk": {"S": "b"}}, UpdateExpression="SET tat = :now",
        ConditionExpression="tat < :now", ExpressionAttributeValues=now,
        ReturnValuesOnConditionCheckFailure="ALL_OLD")) == stored
    assert _failed_item(lambda: db.put_item(
        TableName="budgets", Item={"pk": {"S": "b"}}, ConditionExpression="tat < :now",
        ExpressionAttributeValues=now, ReturnValuesOnConditionCheckFailure="ALL_OLD")) == stored
    assert _failed_item(lambda: db.delete_item(
        TableName="budgets", Key={"pk": {"S": "b"}}, ConditionExpression="tat < :now",
        ExpressionAttributeValues=now, ReturnValuesOnConditionCheckFailure="ALL_OLD")) == stored
    assert _failed_item(lambda: db.update_item(   # not asked: no item
        TableName="budgets", Key={"pk": {"S": "b"}}, UpdateExpression="SET tat = :now",
        ConditionExpression="tat < :now", ExpressionAttributeValues=now)) is None


def test_time_to_live_is_recorded(backend: str) -> None:
    db = _client(backend)
    _create_table(db, TableName="ttl", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")
    assert db.describe_time_to_live(TableName="ttl")["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"
    db.update_time_to_live(TableName="ttl", TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
    described = db.describe_time_to_live(TableName="ttl")["TimeToLiveDescription"]
    assert (described["TimeToLiveStatus"], described["AttributeName"]) == ("ENABLED", "exp")


def test_a_query_may_not_filter_on_a_key_attribute(backend: str) -> None:
    """DynamoDB refuses it; dynalite too. moto answers it (a difference the cost test once
    relied on)."""
    db = _client(backend)
    _create_table(db, TableName="keyed", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                                  {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                          {"AttributeName": "sk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")
    ask = lambda: db.query(TableName="keyed", KeyConditionExpression="pk = :p", FilterExpression="sk = :s",  # noqa: E731
                           ExpressionAttributeValues={":p": {"S": "a"}, ":s": {"S": "b"}})
    if BACKEND_OF[backend] == "moto":
        ask()
        return
    with pytest.raises(ClientError) as refused:
        ask()
    assert "primary key attribute" in refused.value.response["Error"]["Message"]


def _raw(url: str, operation: str, body: dict) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        "X-Amz-Date": "20260101T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/dynamodb/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as answer:
        return answer.code, dict(answer.headers), json.loads(answer.read() or b"{}")


def test_capacity_is_reported_in_a_header_and_answered_only_when_asked(backend: str) -> None:
    """The cost meter's units (cost.py) come from the back-end in `x-herald-capacity`; the
    answer has ConsumedCapacity only when the caller asked for it, as on DynamoDB."""
    db = _client(backend)
    _create_table(db, TableName="metered", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")
    item = {"pk": {"S": "a"}, "data": {"S": "x" * 1500}}   # 2 KB: 2 write units
    status, headers, answer = _raw(backend, "PutItem", {"TableName": "metered", "Item": item})
    assert status == 200 and "ConsumedCapacity" not in answer
    assert {k.lower(): v for k, v in headers.items()}["x-herald-capacity"].split() == ["0", "2", "metered"]
    status, headers, answer = _raw(backend, "GetItem", {"TableName": "metered", "Key": {"pk": {"S": "a"}},
                                                        "ReturnConsumedCapacity": "TOTAL"})
    assert answer["ConsumedCapacity"]["CapacityUnits"] == 0.5
    assert {k.lower(): v for k, v in headers.items()}["x-herald-capacity"].split() == ["0.5", "0", "metered"]
    status, headers, answer = _raw(backend, "PutItem", {"TableName": "metered", "Item": item,
                                                        "ConditionExpression": "attribute_not_exists(pk)"})
    assert status == 400   # a failed condition consumes the stored item's units
    assert {k.lower(): v for k, v in headers.items()}["x-herald-capacity"].split() == ["0", "2", "metered"]
