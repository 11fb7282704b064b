"""Warnings when the stack's event loop stalls.

Every frame, invocation and proxied AWS call passes one event loop; a function's `@connections`
post gives up after its own timeout (Herald's: 2 s), and then the function closes the connection
that missed the frame. So a stall of the loop is a fault the functions see. This watches for
them: the loop's lag (a timer that fires late) and Python's garbage collections, each logged
when longer than `THRESHOLD_S`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

log = logging.getLogger("herald_local")

THRESHOLD_S = 0.25
TICK_S = 0.1

_collecting: dict[str, float] = {}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _collecting["at"] = time.perf_counter()
    elif "at" in _collecting:
        spent = time.perf_counter() - _collecting.pop("at")
        if spent > THRESHOLD_S:
            log.warning("garbage collection of generation %d took %.2f s (%d objects tracked)",
                        info.get("generation", -1), spent, len(gc.get_objects(info.get("generation", 2)))
                        if spent > 1 else -1)


def freeze_start_up() -> None:
    """Move every object start-up made to the collector's permanent generation (`gc.freeze`):
    they live as long as the stack, and each full collection walked all of them again (a
    collection of the second generation took 0.3-0.4 s with 5,000 clients connected)."""
    before = len(gc.get_objects())
    gc.collect()
    gc.freeze()
    log.debug("froze %d objects of start-up", before)


async def watch() -> None:
    """Runs until cancelled."""
    gc.callbacks.append(_on_gc)
    try:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            late = loop.time() - due
            if late > THRESHOLD_S:
                log.warning("the event loop stalled for %.2f s", late)
    finally:
        gc.callbacks.remove(_on_gc)
