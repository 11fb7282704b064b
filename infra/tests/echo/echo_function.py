"""The echo template's one function (template.yaml beside it): a Lambda custom runtime in Python.

$connect stores the connection id, $disconnect deletes it, `broadcast` posts the text to every
stored connection, anything else is posted back to its sender. It finds the @connections
endpoint as a function does on AWS, from the event: https://{domainName}/{stage} there, and
http:// on the local stack, whose domain is a loopback address.
"""

from __future__ import annotations

import json
import os
import urllib.request

import boto3

RUNTIME = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"
TABLE = os.environ["CLIENTS_TABLE"]
db = boto3.client("dynamodb")


def management(context: dict) -> object:
    domain = context["domainName"]
    scheme = "http" if domain.startswith(("127.", "localhost")) else "https"
    return boto3.client("apigatewaymanagementapi", endpoint_url=f"{scheme}://{domain}/{context['stage']}")


def handle(event: dict) -> dict:
    context = event["requestContext"]
    route, me = context["routeKey"], context["connectionId"]
    if route == "$connect":
        db.put_item(TableName=TABLE, Item={"id": {"S": me}})
    elif route == "$disconnect":
        db.delete_item(TableName=TABLE, Key={"id": {"S": me}})
    elif route == "broadcast":
        text = json.loads(event["body"]).get("text", "")
        api = management(context)
        for page in db.get_paginator("scan").paginate(TableName=TABLE):
            for item in page["Items"]:
                api.post_to_connection(ConnectionId=item["id"]["S"], Data=json.dumps({"from": me, "text": text}).encode())
    else:
        management(context).post_to_connection(ConnectionId=me, Data=f"echo: {event.get('body')}".encode())
    return {"statusCode": 200}


def main() -> None:
    while True:
        with urllib.request.urlopen(f"{RUNTIME}/invocation/next") as answer:
            request_id = answer.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(answer.read())
        try:
            body, outcome = json.dumps(handle(event)).encode(), "response"
        except Exception as exc:  # noqa: BLE001 - reported to the runtime, as Lambda runtimes do
            body, outcome = json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode(), "error"
        urllib.request.urlopen(urllib.request.Request(
            f"{RUNTIME}/invocation/{request_id}/{outcome}", data=body, method="POST")).read()


if __name__ == "__main__":
    main()
