"""SQS asks the time through datetime arithmetic for every message it looks at (is it visible?
delayed?), and the approximate counts that every SendMessage computes look at all of them: the
same number from the clock directly.

Test: test_moto_patches.py::test_sqs_keeps_its_timing_rules, ::test_the_clock_is_moto_s.
"""

from __future__ import annotations

import time
from typing import Any

from moto.core import utils as moto_utils
from moto.sqs import models as sqs_models


def unix_time(dt: Any = None) -> float:
    return time.time() if dt is None else moto_utils.unix_time(dt)


def unix_time_millis(dt: Any = None) -> float:
    return unix_time(dt) * 1000.0


def apply() -> None:
    sqs_models.unix_time = unix_time  # type: ignore[attr-defined]
    sqs_models.unix_time_millis = unix_time_millis  # type: ignore[attr-defined]
