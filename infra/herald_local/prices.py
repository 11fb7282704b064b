"""us-east-1 list prices the cost meter (cost.py) charges, in one dated table.

Each price is in dollars per unit of the meter named by its key, without the free tiers (a run
is too short to tell where in a month it falls) and at the first volume tier. `AS_OF` is when the
figures were taken from the pages cited (the ones docs/deploy.md's Cost section uses); update
the date with any figure.
"""

from __future__ import annotations

from dataclasses import dataclass


AS_OF = "2026-11-23"


@dataclass(frozen=True)
class Price:
    dollars: float   # per `per` units
    per: float
    unit: str
    source: str

    @property
    def each(self) -> float:
        return self.dollars / self.per


_DYNAMODB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
_SQS = "https://aws.amazon.com/sqs/pricing/"
_APIGW = "https://aws.amazon.com/api-gateway/pricing/"
_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_SCHEDULER = "https://aws.amazon.com/eventbridge/pricing/"
_S3 = "https://aws.amazon.com/s3/pricing/"

PRICES: dict[str, Price] = {
    # On-demand, Standard table class (the 2024-11-01 price cut).
    "dynamodb.write_request_unit": Price(0.625, 1e6, "write request unit", _DYNAMODB),
    "dynamodb.read_request_unit": Price(0.125, 1e6, "read request unit", _DYNAMODB),
    # Standard queues, first 100 billion requests a month; each 64 KB chunk is one request.
    "sqs.request": Price(0.40, 1e6, "request (64 KB chunk)", _SQS),
    # WebSocket APIs, first billion messages a month; messages metered in 32 KB increments.
    "apigateway.websocket_message": Price(1.00, 1e6, "message (32 KB increment)", _APIGW),
    "apigateway.connection_minute": Price(0.25, 1e6, "connection minute", _APIGW),
    # HTTP APIs, first 300 million requests a month; metered in 512 KB increments.
    "apigateway.http_request": Price(1.00, 1e6, "request (512 KB increment)", _APIGW),
    # First 6 billion GB-seconds a month (x86) / 7.5 billion (arm64).
    "lambda.request": Price(0.20, 1e6, "request", _LAMBDA),
    "lambda.gb_second.arm64": Price(0.0000133334, 1, "GB-second", _LAMBDA),
    "lambda.gb_second.x86_64": Price(0.0000166667, 1, "GB-second", _LAMBDA),
    # EventBridge Scheduler: scheduled invocations (its API calls are not billed).
    "scheduler.invocation": Price(1.00, 1e6, "invocation", _SCHEDULER),
    # S3 Standard.
    "s3.write_request": Price(0.005, 1e3, "PUT, COPY, POST or LIST request", _S3),
    "s3.read_request": Price(0.0004, 1e3, "GET or other request", _S3),
}


def price(key: str) -> float:
    """Dollars per one unit of `key`."""
    return PRICES[key].each
