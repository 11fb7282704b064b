"""The local stack's patches to moto (herald_local/moto_patches), one or more tests each, and the
guard that refuses a moto they were not tested on. The DynamoDB patches are tested with the
other DynamoDB back-end in test_dynamodb_backends.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import free_port, serving


@pytest.fixture(scope="module")
def moto_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "herald_local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield serving(proc, port, "moto server")
    proc.terminate()
    proc.wait(timeout=10)


def _client(url: str):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")


def test_sqs_keeps_its_timing_rules(moto_url: str) -> None:
    """The launcher reads SQS's clock directly instead of through moto's datetime arithmetic
    (and retention from the queue's field): delays and visibility timeouts must still hold, and a
    message inside its retention period is handed out."""
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    url = sqs.create_queue(QueueName="timing", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="now")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in got] == ["now"]
    # Received, so invisible until its visibility timeout ends; the delayed one is due by then.
    time.sleep(1.3)
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert sorted(m["Body"] for m in again) == ["delayed", "now"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "2"


def test_no_message_sent_while_others_are_deleted_is_lost(moto_url: str) -> None:
    """moto's SQS `delete_message` rebuilds the queue's message list and puts the new list in
    place without the lock `SendMessage` appends under: a message sent meanwhile went into the
    old list and was gone, though SendMessage had answered. The full chaos run lost whole
    dispatch batches that way (never claimed, never dead-lettered). moto_patches/sqs_delete_lock.py
    deletes under the queue's lock."""
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    url = sqs.create_queue(QueueName="busy")["QueueUrl"]
    # A backlog (the chaos run's dispatch queue held thousands) makes each delete's rebuild long
    # enough for sends to land inside it.
    for start in range(0, 2000, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"old-{start + i}"} for i in range(10)])
    sent: list[str] = []
    received: set[str] = set()
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def send(worker: int) -> None:
        client = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x")
        for i in range(60):
            body = f"new-{worker}-{i}"
            client.send_message(QueueUrl=url, MessageBody=body)
            with lock:
                sent.append(body)

    def consume() -> None:
        client = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x")
        idle = 0
        while sending.is_set() or idle < 3:
            got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                         VisibilityTimeout=60).get("Messages", [])
            idle = 0 if got else idle + 1
            if got:
                client.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            with lock:
                received.update(m["Body"] for m in got)

    senders = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for t in senders + consumers:
        t.start()
    for t in senders:
        t.join()
    sending.clear()
    for t in consumers:
        t.join()
    lost = [body for body in sent if body not in received]
    assert not lost, f"{len(lost)} of {len(sent)} sent messages vanished: {lost[:5]}"


def test_an_untested_moto_is_refused() -> None:
    from herald_local import moto_patches
    moto_patches.check_version(moto_patches.TESTED_MOTO)
    with pytest.raises(moto_patches.UntestedMoto, match="tested on moto 5.2.5 only"):
        moto_patches.check_version("5.2.6")


def test_the_installed_moto_is_the_tested_one_and_the_pins_agree() -> None:
    from importlib import metadata
    from pathlib import Path

    from herald_local import moto_patches
    assert metadata.version("moto") == moto_patches.TESTED_MOTO
    infra = Path(__file__).resolve().parent.parent
    pin = f"moto[server]=={moto_patches.TESTED_MOTO}"
    assert pin in (infra / "requirements.txt").read_text()
    assert f'"{pin}"' in (infra / "pyproject.toml").read_text()


def test_module_list_and_method_names_are_moto_s() -> None:
    """module_list and method_names cache what moto computes on every request: the same."""
    import subprocess
    import sys
    code = """
import json
from moto import backends
from moto.core import responses
from moto.dynamodb.responses import DynamoHandler
from moto.sqs.responses import SQSResponse
before = (sorted(backends.list_of_moto_modules()), sorted(responses.method_names_from_class(DynamoHandler)),
          sorted(responses.method_names_from_class(SQSResponse)))
from herald_local.moto_patches import method_names, module_list
module_list.apply(); method_names.apply()
after = (sorted(backends.list_of_moto_modules()), sorted(responses.method_names_from_class(DynamoHandler)),
         sorted(responses.method_names_from_class(SQSResponse)))
assert before == after, "differs"
assert responses.method_names_from_class(SQSResponse) is responses.method_names_from_class(SQSResponse)
print("same")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "same"


def test_the_clock_is_moto_s() -> None:
    import datetime
    from moto.core import utils
    from herald_local.moto_patches import sqs_clock
    assert abs(sqs_clock.unix_time() - time.time()) < 1
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5)   # naive UTC, as moto keeps its times
    assert sqs_clock.unix_time(moment) == utils.unix_time(moment)
    assert sqs_clock.unix_time_millis(moment) == utils.unix_time(moment) * 1000.0


def test_a_message_past_its_retention_is_not_handed_out(moto_url: str) -> None:
    """sqs_retention reads the queue's retention period from its field: a message older than it
    is dropped, as SQS drops it."""
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    url = sqs.create_queue(QueueName="retained", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="kept")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", [])] == ["kept"]
