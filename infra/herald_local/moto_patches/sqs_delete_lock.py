"""moto's `Queue.delete_message` builds the queue's message list anew and puts it in place
without the lock `add_message` appends under: a message sent meanwhile went into the old list
and was lost, though SendMessage had answered (the full chaos run lost whole dispatch batches,
never processed, never dead-lettered). Deletes take the queue's lock.

Test: test_moto_patches.py::test_no_message_sent_while_others_are_deleted_is_lost.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from moto.sqs import models as sqs_models


def _under_queue_lock(delete: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(delete)
    def locked(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)
    return locked


def apply() -> None:
    sqs_models.Queue.delete_message = _under_queue_lock(sqs_models.Queue.delete_message)  # type: ignore[method-assign]
