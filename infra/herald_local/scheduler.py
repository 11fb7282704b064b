"""EventBridge Scheduler, the firing half: moto stores schedules but never fires them.

Every `INTERVAL_S` the schedules of all groups are listed; a schedule's details are fetched only
when it is new or its LastModificationDate changed. A due one-time `at()` schedule invokes its
Lambda target with the schedule's `Input`, once (a fired schedule is remembered until it is
modified or deleted); `ActionAfterCompletion: DELETE` then deletes it. rate()/cron() schedules are
not fired locally.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import botocore.exceptions

from .functions import FunctionIndex
from .runtime import FunctionError, FunctionPool

log = logging.getLogger("herald_local")

INTERVAL_S = 0.25
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")


@dataclass
class _Schedule:
    modified: Any                 # LastModificationDate as listed: a change means re-read it
    due: dt.datetime | None       # None: not a one-time schedule
    target_arn: str
    payload: bytes
    delete_after: bool
    fired: bool = False


def due_time(expression: str, timezone: str | None) -> dt.datetime | None:
    """The instant of an `at(yyyy-mm-ddThh:mm:ss)` expression in its time zone, else None."""
    match = _AT.match(expression.strip())
    if not match:
        return None
    try:
        zone: dt.tzinfo = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown ScheduleExpressionTimezone %r, using UTC", timezone)
        zone = dt.timezone.utc
    return dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=zone)


class Scheduler:
    def __init__(self, client: Any, functions: FunctionIndex, pools: dict[str, FunctionPool]) -> None:
        self._client = client    # boto3 'scheduler' client; calls run in worker threads
        self._functions = functions
        self._pools = pools
        self._known: dict[tuple[str, str], _Schedule] = {}
        self._task: asyncio.Task[None] | None = None
        self._firing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        tasks = [t for t in [self._task, *self._firing] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                log.warning("scheduler: %s", exc)
                await asyncio.sleep(1)
            await asyncio.sleep(INTERVAL_S)

    async def tick(self) -> None:
        listed = await asyncio.to_thread(self._list)
        now = dt.datetime.now(dt.timezone.utc)
        seen = set()
        for item in listed:
            key = (item["GroupName"], item["Name"])
            seen.add(key)
            known = self._known.get(key)
            if known is None or known.modified != item.get("LastModificationDate"):
                known = await asyncio.to_thread(self._describe, key, item)
                if known is None:  # deleted since it was listed
                    continue
                self._known[key] = known
            if known.due is not None and not known.fired and known.due <= now:
                known.fired = True
                task = asyncio.create_task(self._fire(key, known))
                self._firing.add(task)
                task.add_done_callback(self._firing.discard)
        for key in set(self._known) - seen:
            del self._known[key]

    def _list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._client.list_schedules(State="ENABLED", **({"NextToken": token} if token else {}))
            items += page.get("Schedules") or []
            token = page.get("NextToken")
            if not token:
                return items

    def _describe(self, key: tuple[str, str], item: dict[str, Any]) -> _Schedule | None:
        group, name = key
        try:
            detail = self._client.get_schedule(GroupName=group, Name=name)
        except self._client.exceptions.ResourceNotFoundException:
            return None
        expression = detail.get("ScheduleExpression", "")
        due = due_time(expression, detail.get("ScheduleExpressionTimezone"))
        if due is None:
            log.warning("schedule %s/%s: %s is not fired locally (only at())", group, name, expression)
        target = detail.get("Target") or {}
        return _Schedule(
            modified=item.get("LastModificationDate"),
            due=due,
            target_arn=target.get("Arn", ""),
            payload=(target.get("Input") or "{}").encode(),
            delete_after=detail.get("ActionAfterCompletion") == "DELETE",
        )

    async def _fire(self, key: tuple[str, str], schedule: _Schedule) -> None:
        group, name = key
        spec = self._functions.get(schedule.target_arn)
        if spec is None:
            log.warning("schedule %s/%s: target %s is not a function of the template",
                        group, name, schedule.target_arn)
        else:
            try:
                await self._pools[spec.key].invoke(schedule.payload)
            except FunctionError as exc:
                log.warning("schedule %s/%s: %s failed: %s", group, name, spec.key, exc)
        if schedule.delete_after:
            try:
                await asyncio.to_thread(self._client.delete_schedule, GroupName=group, Name=name)
            except self._client.exceptions.ResourceNotFoundException:
                pass
