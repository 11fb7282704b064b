"""Pages through one big DynamoDB partition on the local stack's moto (what a broadcast's
membership Query does), to measure the launcher's cost per returned item.

    .venv/bin/python bench/moto_query.py [ITEMS=10000] [ROUNDS=3]

Starts moto as the local stack does (`herald_local.aws.open_endpoint`: the launcher on a free
loopback port, or `AWS_ENDPOINT_URL` when set), writes ITEMS memberships into one
partition, then reads them back in 1,000-item pages ROUNDS times and prints the seconds per
round. Results: docs/performance.md, "10,000 live clients on the local stack".
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "infra"))
from herald_local import aws  # noqa: E402 - starts moto the way the local stack does


def measure(url: str, items: int, rounds: int) -> None:
    db = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                          {"AttributeName": "sk", "AttributeType": "S"}])
    for i in range(0, items, 25):
        db.batch_write_item(RequestItems={"t": [
            {"PutRequest": {"Item": {"pk": {"S": "g#all#0"}, "sk": {"S": f"c#{j:08d}"},
                                     "cid": {"S": f"conn-{j}-abcdefgh"}, "user": {"S": f"user{j}"},
                                     "ttl": {"N": str(1800000000 + j)}}}}
            for j in range(i, min(items, i + 25))]})
    for _ in range(rounds):
        started, n, kw = time.monotonic(), 0, {}
        while True:
            page = db.query(TableName="t", KeyConditionExpression="pk = :p", Limit=1000,
                            ExpressionAttributeValues={":p": {"S": "g#all#0"}}, **kw)
            n += len(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kw = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        assert n == items, (n, items)
        print(f"{items} items in 1,000-item pages: {time.monotonic() - started:.2f} s")


async def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    endpoint = await aws.open_endpoint("127.0.0.1", {"aws_access_key_id": "x", "aws_secret_access_key": "x"})
    try:
        # boto3 blocks; the loop keeps draining moto's output meanwhile.
        await asyncio.to_thread(measure, endpoint.url, items, rounds)
    finally:
        await endpoint.close()


if __name__ == "__main__":
    asyncio.run(main())
