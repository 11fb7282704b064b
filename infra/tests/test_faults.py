"""Faults a chaos run injects: SQS redelivery of a processed message, and the AWS endpoint proxy
(awsproxy.py) answering throttling errors or delaying calls."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest
from aiohttp import web

from conftest import Stack, poll
from herald_local.awsproxy import AwsProxy
from herald_local.faults import Faults


def test_a_redelivery_fault_hands_a_processed_message_out_again(stack: Stack) -> None:
    marker = f"again-{uuid.uuid4().hex}"
    stack.control("POST", "/faults/redeliver", {"function": "dispatch", "rate": 1.0})
    stack.client("sqs").send_message(QueueUrl=stack.info["queues"]["DispatchQueue"], MessageBody=marker)

    def seen_twice() -> bool:
        bodies = [r["body"] for batch in stack.records("sqs") for r in batch["event"]["Records"]]
        return bodies.count(marker) >= 2

    poll(seen_twice, timeout=20, what="the processed message delivered again")
    stack.control("DELETE", "/faults")
    status, body, _ = stack.control("GET", "/faults")
    assert status == 200 and body["injected"]["redelivery"] >= 1


@pytest.fixture
def proxy(stack: Stack) -> Iterator[tuple[str, Faults]]:
    """An AwsProxy in front of the stack's AWS endpoint, on its own loop in a thread."""
    faults = Faults()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(AwsProxy(stack.info["awsEndpoint"], faults).application())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        holder["runner"] = runner
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10)
    yield holder["url"], faults
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def dynamodb(stack: Stack, url: str) -> Any:
    creds = stack.info["managementCredentials"]
    return boto3.client("dynamodb", endpoint_url=url, region_name=stack.info["region"],
                        aws_access_key_id=creds["accessKeyId"],
                        aws_secret_access_key=creds["secretAccessKey"],
                        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}))


def test_the_aws_proxy_forwards_throttles_and_delays(stack: Stack, proxy: tuple[str, Faults]) -> None:
    url, faults = proxy
    client = dynamodb(stack, url)
    assert client.list_tables()["TableNames"], "the proxy forwards to the endpoint"

    faults.add_aws_fault("ListTables", status=400)
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        client.list_tables()
    faults.clear()

    faults.add_aws_fault("DynamoDB_20120810.ListTables", delay_ms=300)
    started = time.monotonic()
    client.list_tables()
    assert time.monotonic() - started >= 0.3
    assert faults.counts == {"aws:ListTables:400": 1, "aws:DynamoDB_20120810.ListTables:delay": 1}


def test_an_unprocessed_fault_hands_a_batch_back_undone_for_count_calls(stack: Stack, proxy: tuple[str, Faults]) -> None:
    url, faults = proxy
    client = dynamodb(stack, url)
    table = stack.info["tables"]["ConnectionsTable"]
    key = {"pk": {"S": f"unprocessed-{uuid.uuid4().hex}"}, "sk": {"S": "#"}}
    client.put_item(TableName=table, Item={**key, "v": {"S": "stored"}})
    faults.add_aws_fault("BatchGetItem", match=key["pk"]["S"], unprocessed=True, count=1)
    request = {table: {"Keys": [key]}}
    first = client.batch_get_item(RequestItems=request)
    assert first["Responses"] == {table: []}
    assert first["UnprocessedKeys"] == request, "every key handed back, as DynamoDB does"
    second = client.batch_get_item(RequestItems=request)
    assert second["Responses"][table] == [{**key, "v": {"S": "stored"}}] and not second.get("UnprocessedKeys")

    put = {table: [{"PutRequest": {"Item": {**key, "v": {"S": "again"}}}}]}
    faults.add_aws_fault("BatchWriteItem", match=key["pk"]["S"], unprocessed=True, count=1)
    assert client.batch_write_item(RequestItems=put)["UnprocessedItems"] == put
    assert client.get_item(TableName=table, Key=key)["Item"]["v"] == {"S": "stored"}, "nothing written"
    assert not client.batch_write_item(RequestItems=put).get("UnprocessedItems")
    assert client.get_item(TableName=table, Key=key)["Item"]["v"] == {"S": "again"}
    assert faults.counts == {"aws:BatchGetItem:unprocessed": 1, "aws:BatchWriteItem:unprocessed": 1}
    with pytest.raises(ValueError):
        faults.add_aws_fault("PutItem", unprocessed=True)
    with pytest.raises(ValueError):
        faults.add_aws_fault("BatchGetItem", unprocessed=True, status=400)
