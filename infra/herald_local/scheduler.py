"""EventBridge Scheduler, the firing half: moto stores schedules but never fires them.

Every `INTERVAL_S` the schedules of all groups are listed; a schedule's details are fetched only
when it is new or its LastModificationDate changed. A due one-time `at()` schedule invokes its
Lambda target with the schedule's `Input`, once (a fired schedule is remembered until it is
modified or deleted); `ActionAfterCompletion: DELETE` then deletes it. rate()/cron() schedules are
not fired locally.

Scheduler invokes Lambda asynchronously, with the schedule's role (which must allow
lambda:InvokeFunction on the target: checked when the stack checks IAM). An asynchronous
invocation that fails is retried as Lambda retries it (the function's EventInvokeConfig
MaximumRetryAttempts, 2 by default; after ASYNC_RETRY_DELAYS_S here, not Lambda's minutes), then
goes to its on-failure destination with Lambda's invocation record, which names the error; with
none, it is dropped, as on AWS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import botocore.exceptions

from .cost import Meter
from .functions import FunctionIndex, FunctionSpec
from .iam import Request
from .runtime import FunctionError, FunctionPool

log = logging.getLogger("herald_local")

INTERVAL_S = 0.25
# Lambda waits about a minute, then two, between the attempts of a failed asynchronous
# invocation; the local stack keeps the order and shortens the waits so tests see the outcome.
ASYNC_RETRY_DELAYS_S = (1.0, 2.0)
DEFAULT_ASYNC_RETRIES = 2
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")


@dataclass
class _Schedule:
    modified: Any                 # LastModificationDate as listed: a change means re-read it
    due: dt.datetime | None       # None: not a one-time schedule
    target_arn: str
    role_arn: str
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
    def __init__(self, client: Any, functions: FunctionIndex, pools: dict[str, FunctionPool], *,
                 sqs: Any = None, access: Any = None, queue_urls: dict[str, str] | None = None,
                 retry_delays_s: tuple[float, ...] = ASYNC_RETRY_DELAYS_S,
                 meter: Meter | None = None) -> None:
        self._meter = meter   # cost.py: each schedule that fires is one billed invocation
        self._client = client    # boto3 'scheduler' client; calls run in worker threads
        self._functions = functions
        self._pools = pools
        self._sqs = sqs                       # boto3 SQS client: on-failure destinations
        self._access = access                 # access.Access, when IAM is checked
        self._queue_urls = queue_urls or {}   # queue ARN -> URL
        self._retry_delays_s = retry_delays_s
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
            role_arn=target.get("RoleArn", ""),
            payload=(target.get("Input") or "{}").encode(),
            delete_after=detail.get("ActionAfterCompletion") == "DELETE",
        )

    def _may_invoke(self, schedule: _Schedule) -> bool:
        """Whether the schedule's role lets Scheduler invoke its target (when IAM is checked)."""
        if self._access is None:
            return True
        who = self._access.service_identity("scheduler", schedule.role_arn)
        call = Request("lambda:InvokeFunction", schedule.target_arn)
        if who is None:
            log.warning("IAM: scheduler denied lambda:InvokeFunction on %s: role %r is not a role "
                        "of the template", schedule.target_arn, schedule.role_arn)
            return False
        return self._access.decide(who, call).allowed

    async def _fire(self, key: tuple[str, str], schedule: _Schedule) -> None:
        group, name = key
        if self._meter is not None:
            self._meter.schedule_fired()
        spec = self._functions.get(schedule.target_arn)
        if spec is None:
            log.warning("schedule %s/%s: target %s is not a function of the template",
                        group, name, schedule.target_arn)
        elif self._may_invoke(schedule):
            await self.invoke_async(spec, schedule.payload, f"schedule {group}/{name}")
        if schedule.delete_after:
            try:
                await asyncio.to_thread(self._client.delete_schedule, GroupName=group, Name=name)
            except self._client.exceptions.ResourceNotFoundException:
                pass

    async def invoke_async(self, spec: FunctionSpec, payload: bytes, what: str) -> None:
        """Lambda's asynchronous invocation: the first attempt and its retries, then the
        on-failure destination (or nothing) when every attempt failed."""
        config = spec.event_invoke
        retries = int(config.get("MaximumRetryAttempts", DEFAULT_ASYNC_RETRIES))
        error: FunctionError | None = None
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(self._retry_delays_s[min(attempt, len(self._retry_delays_s)) - 1])
            try:
                await self._pools[spec.key].invoke(payload)
                return
            except FunctionError as exc:
                error = exc
                log.warning("%s: %s failed (attempt %d of %d): %s", what, spec.key, attempt + 1,
                            retries + 1, exc)
        assert error is not None
        destination = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        if not destination:
            log.warning("%s: %s failed %d times; no on-failure destination: the event is dropped",
                        what, spec.key, retries + 1)
            return
        await self._to_destination(spec, str(destination), payload, error, retries + 1, what)

    async def _to_destination(self, spec: FunctionSpec, destination: str, payload: bytes,
                              error: FunctionError, attempts: int, what: str) -> None:
        """Lambda's invocation record, sent with the function's own role (as Lambda does)."""
        url = self._queue_urls.get(destination)
        if url is None or self._sqs is None:
            log.warning("%s: on-failure destination %s is not a queue of the template", what, destination)
            return
        if self._access is not None:
            who = self._access.of_function(spec.key)
            if who is not None and not self._access.decide(who, Request("sqs:SendMessage", destination)).allowed:
                return   # logged by Access: Lambda cannot deliver it either
        try:
            request_payload: Any = json.loads(payload)
        except ValueError:
            request_payload = payload.decode("utf-8", "replace")
        try:
            response_payload: Any = json.loads(error.payload)
        except ValueError:
            response_payload = error.payload.decode("utf-8", "replace")
        record = {
            "version": "1.0",
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": f"{spec.arn}:$LATEST",
                               "condition": "RetriesExhausted", "approximateInvokeCount": attempts},
            "requestPayload": request_payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                "functionError": "Unhandled"},
            "responsePayload": response_payload,
        }
        body = json.dumps(record)
        await asyncio.to_thread(self._sqs.send_message, QueueUrl=url, MessageBody=body)
        if self._meter is not None:
            self._meter.sqs_call("SendMessage", "lambda destinations", len(body))
        log.warning("%s: %s failed %d times; sent to its on-failure destination %s",
                    what, spec.key, attempts, destination)
