"""Each table in a moto process of its own (aws.open_endpoint), routed by the AWS proxy
(awsproxy.Upstreams): what a caller of `awsEndpoint` or a function sees is still one endpoint."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import Stack
from herald_local.awsproxy import Upstreams


def test_calls_go_to_the_process_of_the_table_they_name() -> None:
    up = Upstreams("http://m:1", {"conn": "http://m:2", "notif": "http://m:3"})
    ddb = "DynamoDB_20120810."
    assert up.route(ddb + "PutItem", b'{"TableName":"conn","Item":{}}') == "http://m:2"
    assert up.route(ddb + "Query", b'{"TableName":"notif"}') == "http://m:3"
    assert up.route(ddb + "BatchWriteItem", b'{"RequestItems":{"notif":[]}}') == "http://m:3"
    assert up.route(ddb + "TransactWriteItems",
                    b'{"TransactItems":[{"Put":{"TableName":"conn"}},{"Update":{"TableName":"conn"}}]}') == "http://m:2"
    # A table it does not know (one a test created) and other services: the endpoint.
    assert up.route(ddb + "CreateTable", b'{"TableName":"other"}') == "http://m:1"
    assert up.route("AmazonSQS.SendMessage", b'{"TableName":"conn"}') == "http://m:1"
    assert up.route("", b"Action=SendMessage") == "http://m:1"


def test_a_call_it_cannot_route_is_refused_with_a_reason() -> None:
    up = Upstreams("http://m:1", {"conn": "http://m:2", "notif": "http://m:3"})
    across = up.route("DynamoDB_20120810.BatchWriteItem", b'{"RequestItems":{"conn":[],"notif":[]}}')
    assert not isinstance(across, str) and across.status == 400
    assert b"across tables in different moto processes" in across.body  # type: ignore[operator]
    partiql = up.route("DynamoDB_20120810.ExecuteStatement", b'{"Statement":"SELECT * FROM conn"}')
    assert not isinstance(partiql, str) and partiql.status == 400


def test_one_process_routes_nothing() -> None:
    up = Upstreams("http://m:1", {"conn": "http://m:1"})
    assert up.route("DynamoDB_20120810.ExecuteStatement", b"{}") == "http://m:1"
    assert up.everywhere() == ["http://m:1"]


def test_the_stack_splits_its_tables_and_its_endpoint_still_serves_them_all(stack: Stack) -> None:
    tables = stack.info["tables"]
    where = stack.info["tableEndpoints"]
    assert sorted(where) == sorted(tables.values())
    assert len(set(where.values())) == len(where), "each table in a process of its own"

    db = stack.client("dynamodb")
    assert set(tables.values()) <= set(db.list_tables()["TableNames"]), "ListTables merges them"
    paged = db.list_tables(Limit=1)
    assert len(paged["TableNames"]) == 1 and "LastEvaluatedTableName" in paged

    conn, notif = tables["ConnectionsTable"], tables["NotificationsTable"]
    key = {"pk": {"S": f"split-{uuid.uuid4().hex}"}, "sk": {"S": "x"}}
    db.put_item(TableName=conn, Item=key)
    assert db.get_item(TableName=conn, Key=key)["Item"] == key
    # The item is in the connections table's own process, which does not hold the other table.
    own = _client_at(stack, where[conn])
    assert own.get_item(TableName=conn, Key=key)["Item"] == key
    with pytest.raises(own.exceptions.ResourceNotFoundException):
        own.describe_table(TableName=notif)

    with pytest.raises(ClientError, match="across tables in different moto processes"):
        db.batch_write_item(RequestItems={
            conn: [{"PutRequest": {"Item": key}}],
            notif: [{"PutRequest": {"Item": key}}]})


def _client_at(stack: Stack, url: str) -> Any:
    creds = stack.info["managementCredentials"]
    return boto3.client("dynamodb", endpoint_url=url, region_name=stack.info["region"],
                        aws_access_key_id=creds["accessKeyId"],
                        aws_secret_access_key=creds["secretAccessKey"])
