"""SQS's retention check from the queue's field. moto's own check computes every attribute of the
queue (each approximate count walks all its messages) to read one number, for each message a
receive returns: a receive's cost grew with the square of the backlog.

Test: test_moto_patches.py::test_sqs_keeps_its_timing_rules (and ..._retention_...).
"""

from __future__ import annotations

import time
from typing import Any

from moto.sqs.models import SQSBackend


def _retention_from_queue(self: SQSBackend, queue_name: str, message: Any) -> bool:
    retain_until = self.get_queue(queue_name).message_retention_period + message.sent_timestamp / 1000
    return retain_until > time.time()


def apply() -> None:
    SQSBackend.is_message_valid_based_on_retention_period = _retention_from_queue  # type: ignore[method-assign]
