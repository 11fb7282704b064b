"""Item operations answer with `json.dumps` of moto's own wire-format dicts, as DynamoDB's JSON
protocol writes them, instead of moto's generic serializer, which walks the operation's output
shape attribute by attribute in Python: for a Query page of 1,000 items that was 58 % of moto's
DynamoDB time during a 10,000-client broadcast. Table descriptions and the rest keep moto's
serializer (it picks attributes out of model objects and formats timestamps).

Test: test_dynamodb_backends.py::test_item_answers_keep_every_attribute_type_and_number_order.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from moto.core.responses import ActionResult
from moto.dynamodb import responses as dynamo_responses
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodb.responses import DynamoHandler

ITEM_OPERATIONS = ("get_item", "put_item", "update_item", "delete_item", "query", "scan",
                   "batch_get_item", "batch_write_item", "transact_get_items", "transact_write_items")
_PLAIN = threading.local()
_DynamoResult = dynamo_responses.DynamoResult


class PlainJsonResult(ActionResult):
    """The answer as DynamoDB writes it; headers the handler adds (the CRC32, the request id)
    are added by moto as before."""

    def execute_result(self, context: Any) -> tuple[int, dict[str, Any], str]:
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, dynamo_json_dump(self.result)


def _dynamo_result(result: Any) -> ActionResult:
    if getattr(_PLAIN, "on", False):
        return PlainJsonResult(result)
    return _DynamoResult(result)


def _plain_json(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        _PLAIN.on = True
        try:
            return fn(*args, **kwargs)
        finally:
            _PLAIN.on = False
    return plain


def apply() -> None:
    dynamo_responses.DynamoResult = _dynamo_result  # type: ignore[assignment,misc]
    for name in ITEM_OPERATIONS:
        setattr(DynamoHandler, name, _plain_json(getattr(DynamoHandler, name)))
