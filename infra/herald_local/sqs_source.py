"""SQS event-source mappings: `Type: SQS` events of the functions.

Like Lambda's poller: long-poll, invoke with the SQS event shape, delete what succeeded (all but
`batchItemFailures` when ReportBatchItemFailures is on; nothing when the invocation fails), and
let the rest come back after the visibility timeout. Moving a message to the dead-letter queue
after `maxReceiveCount` receives is the queue's job: moto 5.2.5 applies RedrivePolicy on receive
(as SQS does), and so do LocalStack and AWS, so the poller never moves messages itself.

Several batches of one queue are in flight at once (up to `MAX_CONCURRENT_BATCHES`, or the
mapping's ScalingConfig.MaximumConcurrency), so sharded fan-out runs in parallel.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from .aws import Provisioned
from .cost import Meter
from .functions import FunctionSpec
from .iam import Request
from .runtime import MAX_LINEAGE, FunctionError, FunctionPool, lineage_count
from .template import TemplateError

log = logging.getLogger("herald_local")

MAX_CONCURRENT_BATCHES = 4
WAIT_SECONDS = 1   # short long-polls: new messages still arrive at once, and shutdown is quick


# What Lambda's SQS event source mapping does with the function's role (AWS documents these
# three as the execution role's required permissions).
ESM_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")


@dataclass
class SqsMapping:
    function: FunctionSpec
    queue_url: str
    queue_arn: str
    batch_size: int
    window_s: float
    partial_batch: bool
    concurrency: int


def mappings_from_functions(specs: list[FunctionSpec], provisioned: Provisioned) -> list[SqsMapping]:
    out = []
    for spec in specs:
        for name, event in spec.events.items():
            if event.get("Type") != "SQS":
                continue
            props = event.get("Properties") or {}
            if props.get("Enabled") in (False, "false"):
                continue
            arn = str(props.get("Queue"))
            if arn not in provisioned.queue_urls_by_arn:
                raise TemplateError(f"{spec.logical_id}.{name}: Queue {arn} is not a queue of the template")
            scaling = (props.get("ScalingConfig") or {}).get("MaximumConcurrency")
            out.append(SqsMapping(
                function=spec,
                queue_url=provisioned.queue_urls_by_arn[arn],
                queue_arn=arn,
                batch_size=int(props.get("BatchSize", 10)),
                window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                partial_batch="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                concurrency=min(MAX_CONCURRENT_BATCHES, int(scaling or MAX_CONCURRENT_BATCHES)),
            ))
    return out


class SqsPoller:
    """Runs `mapping.concurrency` receive→invoke→delete loops for one mapping."""

    def __init__(self, mapping: SqsMapping, pool: FunctionPool, sqs: Any, region: str,
                 access: Any = None, meter: Meter | None = None) -> None:
        self.mapping = mapping
        self._meter = meter      # cost.py: Lambda's polls are billed as the account's requests
        self._access = access    # access.Access, when the functions' IAM is checked
        self._pool = pool
        self._sqs = sqs          # a boto3 client (thread-safe); calls run in worker threads
        self._region = region
        self._tasks: list[asyncio.Task[None]] = []
        self.loops_stopped = 0   # messages not handed over: their chain was too long

    def start(self) -> None:
        if not self.permitted():
            return
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.mapping.concurrency)]

    def permitted(self) -> bool:
        """Lambda polls a queue with the function's own role, and creating the event source
        mapping fails unless that role may receive, delete and read the queue's attributes.
        Locally the mapping then never polls (the refusal is logged by Access)."""
        if self._access is None:
            return True
        who = self._access.of_function(self.mapping.function.key)
        if who is None:
            return True
        refused = [action for action in ESM_ACTIONS
                   if not self._access.decide(who, Request(action, self.mapping.queue_arn)).allowed]
        if refused:
            log.error("%s: the event source mapping of %s cannot poll: its role does not allow %s",
                      self.mapping.function.key, self.mapping.queue_arn, ", ".join(refused))
        return not refused

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                messages = await self._receive_batch()
                if messages:
                    await self._process(messages)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                log.warning("%s: polling %s failed: %s", self.mapping.function.key,
                            self.mapping.queue_url, exc)
                await asyncio.sleep(1)

    async def _receive_batch(self) -> list[dict[str, Any]]:
        """One batch: up to BatchSize messages, waiting up to the batching window to fill it."""
        mapping = self.mapping
        batch = await self._receive(WAIT_SECONDS, mapping.batch_size)
        if not batch or mapping.window_s <= 0:
            return batch
        window_end = time.monotonic() + mapping.window_s
        while len(batch) < mapping.batch_size:
            remaining = window_end - time.monotonic()
            if remaining <= 0:
                break
            wait = max(1, min(WAIT_SECONDS, int(remaining)))
            batch += await self._receive(wait, mapping.batch_size - len(batch))
        return batch

    async def _receive(self, wait_s: int, at_most: int) -> list[dict[str, Any]]:
        response = await asyncio.to_thread(
            self._sqs.receive_message, QueueUrl=self.mapping.queue_url,
            MaxNumberOfMessages=min(10, at_most), WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"])
        messages = response.get("Messages") or []
        if self._meter is not None:   # empty receives are billed too
            self._meter.sqs_call("ReceiveMessage", "event source",
                                 sum(len(m.get("Body", "")) for m in messages))
        return messages

    async def _process(self, messages: list[dict[str, Any]]) -> None:
        # Lambda's recursive loop detection: a message whose request chain already went through
        # this function MAX_LINEAGE times is not handed to it. It stays on the queue (and moves
        # to the dead-letter queue after its receives run out), as on AWS.
        counts = {m["MessageId"]: lineage_count((m.get("Attributes") or {}).get("AWSTraceHeader"),
                                                self._pool.lineage_hash) for m in messages}
        stopped = [m for m in messages if counts[m["MessageId"]] >= MAX_LINEAGE]
        if stopped:
            self.loops_stopped += len(stopped)
            log.warning("%s: recursive loop detected: %d message(s) of %s went through it %d times; "
                        "not invoked (as Lambda)", self.mapping.function.key, len(stopped),
                        self.mapping.queue_url, MAX_LINEAGE)
            messages = [m for m in messages if counts[m["MessageId"]] < MAX_LINEAGE]
            if not messages:
                return
        lineage = max(counts[m["MessageId"]] for m in messages)
        event = {"Records": [self._record(m) for m in messages]}
        try:
            raw = await self._pool.invoke(json.dumps(event).encode(), lineage=lineage)
        except FunctionError as exc:
            log.warning("%s: batch of %d failed, left for redelivery: %s",
                        self.mapping.function.key, len(messages), exc.error_type)
            return
        failed = self._failures(raw, {m["MessageId"] for m in messages})
        # An injected redelivery leaves a processed message on the queue: SQS hands it out again
        # once its visibility timeout ends, as its at-least-once delivery may on AWS.
        done = [m for m in messages if m["MessageId"] not in failed
                and not self._pool.faults.should_redeliver(self._pool.names)]
        for start in range(0, len(done), 10):
            chunk = done[start:start + 10]
            result = await asyncio.to_thread(
                self._sqs.delete_message_batch, QueueUrl=self.mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                         for i, m in enumerate(chunk)])
            if self._meter is not None:
                self._meter.sqs_call("DeleteMessageBatch", "event source", 0)
            for failure in result.get("Failed") or []:  # e.g. its visibility timeout ran out
                log.warning("%s: delete failed: %s", self.mapping.function.key,
                            failure.get("Message"))

    def _failures(self, raw: bytes, ids: set[str]) -> set[str]:
        """Message ids to keep; a malformed partial response fails the whole batch (as Lambda)."""
        if not self.mapping.partial_batch:
            return set()
        try:
            doc = json.loads(raw) if raw.strip() else None
        except ValueError:
            return ids
        if not doc:
            return set()
        items = doc.get("batchItemFailures") if isinstance(doc, dict) else None
        if items is None:
            return set()
        failed = set()
        for item in items if isinstance(items, list) else [None]:
            identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not identifier or identifier not in ids:
                return ids
            failed.add(identifier)
        return failed

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": message.get("Attributes") or {},
            "messageAttributes": {name: _attribute(value) for name, value
                                  in (message.get("MessageAttributes") or {}).items()},
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.mapping.queue_arn,
            "awsRegion": self._region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    """boto3's MessageAttributeValue → the Lambda event's camelCase shape (binary as base64)."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    out: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues") or []),
        "binaryListValues": [b64(v) for v in value.get("BinaryListValues") or []],
        "dataType": value.get("DataType"),
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = b64(value["BinaryValue"])
    return out
