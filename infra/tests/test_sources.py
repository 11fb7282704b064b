"""Event sources: SQS polling (partial batch responses, redrive, parallel batches) and the
scheduler firing one-time at() schedules."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from conftest import Stack, poll


def records_with(stack: Stack, marker: str) -> list[dict[str, Any]]:
    """Every SQS record the fakes saw whose body contains `marker`, across batches."""
    return [rec for batch in stack.records("sqs") for rec in batch["event"]["Records"]
            if marker in rec["body"]]


def dead_letters(stack: Stack, sqs: Any, queue: str, marker: str) -> list[str]:
    found: list[str] = []

    def drained() -> bool:
        messages = sqs.receive_message(QueueUrl=stack.info["queues"][queue], MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages") or []
        found.extend(m["Body"] for m in messages if marker in m["Body"])
        return bool(found)

    poll(drained, timeout=20, what=f"{marker} in {queue}")
    return found


def test_partial_batch_response_and_redrive(stack: Stack) -> None:
    sqs = stack.client("sqs")
    run = uuid.uuid4().hex
    ok, bad = f"ok-{run}", f"fail-{run}"
    queue = stack.info["queues"]["DispatchQueue"]
    sqs.send_message(QueueUrl=queue, MessageBody=ok, MessageAttributes={
        "kind": {"DataType": "String", "StringValue": "test"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x01\x02"}})
    sqs.send_message(QueueUrl=queue, MessageBody=bad)
    # maxReceiveCount is 2 in the test template: two failed receives, then the DLQ.
    assert dead_letters(stack, sqs, "DispatchDeadLetterQueue", run) == [bad]
    # With a 1 s visibility timeout the third receive (the move to the DLQ) can beat the
    # second invocation's record on a loaded machine.
    poll(lambda: len(records_with(stack, bad)) >= 2, timeout=10, what="the second invocation")
    assert [r["attributes"]["ApproximateReceiveCount"] for r in records_with(stack, bad)] == ["1", "2"]
    [ok_record] = records_with(stack, ok)     # succeeded once: deleted, never redelivered
    assert ok_record["eventSource"] == "aws:sqs"
    assert ok_record["eventSourceARN"].endswith(":herald-DispatchQueue")
    assert ok_record["awsRegion"] == "us-east-1"
    assert ok_record["messageAttributes"]["kind"] == {
        "stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
    assert ok_record["messageAttributes"]["blob"]["binaryValue"] == "AQI="
    assert ok_record["md5OfBody"] and ok_record["receiptHandle"]
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= ok_record["attributes"].keys()


def test_failed_invocation_leaves_the_whole_batch(stack: Stack) -> None:
    sqs = stack.client("sqs")
    run = uuid.uuid4().hex
    sqs.send_message(QueueUrl=stack.info["queues"]["RetryQueue"], MessageBody=f"crash-{run}")
    assert dead_letters(stack, sqs, "RetryDeadLetterQueue", run) == [f"crash-{run}"]
    # The second receive may still be waiting out its 1 s batching window when another poller's
    # third receive (1 s visibility timeout) moves the message to the DLQ.
    poll(lambda: len(records_with(stack, run)) >= 2, timeout=10, what="the second invocation")
    assert len(records_with(stack, run)) == 2


def test_batches_run_in_parallel(stack: Stack) -> None:
    """Up to four batches of one queue are in flight: slow batches land on several instances."""
    sqs = stack.client("sqs")
    run = uuid.uuid4().hex
    queue = stack.info["queues"]["DispatchQueue"]
    for start in range(0, 40, 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "MessageBody": f"sleep:1.5:{run}:{i}"} for i in range(start, start + 10)])

    def all_seen() -> bool:
        return len({r["messageId"] for r in records_with(stack, run)}) == 40

    poll(all_seen, timeout=30, what="all 40 messages")
    pids = {b["pid"] for b in stack.records("sqs")
            if any(run in r["body"] for r in b["event"]["Records"])}
    assert len(pids) >= 2


def test_scheduler_fires_an_at_schedule_once_and_deletes_it(stack: Stack) -> None:
    scheduler = stack.client("scheduler")
    group = stack.info["scheduleGroup"]
    name = f"reminder-{uuid.uuid4().hex[:8]}"
    at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    scheduler.create_schedule(
        Name=name, GroupName=group, ScheduleExpression=f"at({at})",
        FlexibleTimeWindow={"Mode": "OFF"}, ActionAfterCompletion="DELETE",
        Target={"Arn": stack.info["functionEnv"]["HERALD_REMINDER_TARGET_ARN"],
                "RoleArn": stack.info["functionEnv"]["HERALD_SCHEDULER_ROLE_ARN"],
                "Input": json.dumps({"reminder": name})})

    def deleted() -> bool:
        try:
            scheduler.get_schedule(Name=name, GroupName=group)
            return False
        except scheduler.exceptions.ResourceNotFoundException:
            return True

    poll(deleted, timeout=15, what="the schedule to be deleted after firing")
    fired = [r for r in stack.records("reminder") if r["event"] == {"reminder": name}]
    assert len(fired) == 1


def test_schedule_without_delete_fires_once_and_stays(stack: Stack) -> None:
    scheduler = stack.client("scheduler")
    group = stack.info["scheduleGroup"]
    names = [f"keep-{uuid.uuid4().hex[:8]}", f"later-{uuid.uuid4().hex[:8]}"]
    now = dt.datetime.now(dt.timezone.utc)
    for name, delay in zip(names, (0, 2)):
        at = (now + dt.timedelta(seconds=delay)).strftime("%Y-%m-%dT%H:%M:%S")
        scheduler.create_schedule(
            Name=name, GroupName=group, ScheduleExpression=f"at({at})",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={"Arn": stack.info["functionEnv"]["HERALD_REMINDER_TARGET_ARN"],
                    "RoleArn": stack.info["functionEnv"]["HERALD_SCHEDULER_ROLE_ARN"],
                    "Input": json.dumps({"reminder": name})})
    # The second schedule fires at least one scheduler pass after the first: by then a second
    # firing of the first would have happened too.
    stack.wait_record("reminder", lambda r: r["event"] == {"reminder": names[1]}, timeout=15)
    assert len([r for r in stack.records("reminder") if r["event"] == {"reminder": names[0]}]) == 1
    assert scheduler.get_schedule(Name=names[0], GroupName=group)["Name"] == names[0]
