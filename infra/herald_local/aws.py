"""The AWS side: an endpoint (moto server or AWS_ENDPOINT_URL), boto3 clients, provisioning.

Provisioning creates the template's DynamoDB tables, SQS queues, schedule groups and S3 buckets, and registers
every resource's physical id and attributes with the `Resolver` so that function environments,
event sources and API definitions resolve to the local names. Resources are created in whatever
order their references allow (a queue's RedrivePolicy needs its DLQ's Arn first).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from . import procs
from .template import Resolver, Resource, Template, TemplateError, Unresolved

log = logging.getLogger("herald_local")

MOTO_REGION = "us-east-1"


@dataclass
class Endpoint:
    url: str   # every service; with a moto of the stack's own, the tables may be elsewhere
    region: str
    credentials: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    # Processes serving tables besides `process` (dynalite's), stopped with it.
    table_processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    log_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # moto processes waiting for a table each, and the tables placed on them (name -> URL).
    spare: list[str] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)

    def place_table(self, name: str) -> str:
        """The URL that serves table `name`: a process of its own while there are spare ones
        (see `open_endpoint`), else the endpoint's."""
        if name not in self.tables:
            self.tables[name] = self.spare.pop(0) if self.spare else self.url
        return self.tables[name]

    def client(self, service: str, attempts: int = 3, url: str | None = None) -> Any:
        """A boto3 client of the endpoint (or of one table's process). Short timeouts:
        everything is local. Pollers, which loop anyway, take one attempt, so that no retry
        against a stopped moto delays exit."""
        config = botocore.config.Config(
            connect_timeout=2, read_timeout=20, max_pool_connections=32,
            retries={"total_max_attempts": attempts, "mode": "standard"})
        return boto3.session.Session().client(
            service, endpoint_url=url or self.url, region_name=self.region, config=config,
            **self.credentials)

    def env(self) -> dict[str, str]:
        """What a function process needs to reach this endpoint."""
        env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.credentials["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self.credentials["aws_secret_access_key"],
        }
        if self.credentials.get("aws_session_token"):
            env["AWS_SESSION_TOKEN"] = self.credentials["aws_session_token"]
        return env

    async def close(self) -> None:
        for proc in self.table_processes:
            await procs.kill(proc)
        if self.process is not None:
            await procs.kill(self.process)


async def open_endpoint(host: str, credentials: dict[str, str], tables: int = 0,
                        dynamodb: str = "moto", account: str = "123456789012") -> Endpoint:
    """AWS_ENDPOINT_URL when set (LocalStack, ...), otherwise a fresh moto server, which takes any
    `credentials` (dummies; the functions sign with them).

    A moto of our own serves everything from one process, plus `tables` more processes that
    each take one table's DynamoDB calls (`Endpoint.place_table`; the stack's AWS proxy routes
    them). moto runs a request under Python's GIL, so one process serves at most one core: the
    full chaos run (docs/reliability.md) kept one moto at 85-90 % of a core while the machine
    had room, and Herald's two tables took about 55 % and 35 % of its requests, SQS and the Scheduler the rest."""
    external = os.environ.get("AWS_ENDPOINT_URL")
    if external:
        creds = {
            "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        }
        if os.environ.get("AWS_SESSION_TOKEN"):
            creds["aws_session_token"] = os.environ["AWS_SESSION_TOKEN"]
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or MOTO_REGION
        return Endpoint(url=external, region=region, credentials=creds)
    if tables and dynamodb == "dynalite":
        endpoint = await _start_moto(host, credentials, 1)
        try:
            await _start_dynalite(endpoint, host, tables, account)
        except BaseException:
            await endpoint.close()
            raise
        return endpoint
    return await _start_moto(host, credentials, 1 + tables)


# dynalite as `npm ci` in infra/ installs it (infra/package-lock.json pins it), or where
# $HERALD_LOCAL_DYNALITE says.
DYNALITE = Path(os.environ.get("HERALD_LOCAL_DYNALITE")
                or Path(__file__).resolve().parent.parent / "node_modules" / "dynalite")
DYNALITE_SERVER = Path(__file__).resolve().parent / "dynalite_server.js"


async def _start_dynalite(endpoint: Endpoint, host: str, count: int, account: str) -> None:
    """`count` dynalite servers (one per table: each is one Node process, one core at most),
    in memory, whose tables are ACTIVE as soon as created."""
    if not (DYNALITE / "cli.js").is_file() or shutil.which("node") is None:
        raise RuntimeError(
            f"the tables are served by dynalite, which needs Node.js (20 or later) and {DYNALITE} "
            "(`make venv`, or `npm ci` in infra/, installs it); or run with --dynamodb moto")
    for _ in range(count):
        for _attempt in range(3):
            port = _free_ports(host, 1)[0]
            proc = await procs.spawn(
                ["node", str(DYNALITE_SERVER), str(DYNALITE), "--host", host, "--port", str(port),
                 "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"],
                env={**os.environ, "AWS_ACCOUNT_ID": account, "AWS_REGION": endpoint.region})
            endpoint.log_tasks += [asyncio.create_task(_drain_moto(proc.stdout, "dynalite")),
                                   asyncio.create_task(_drain_moto(proc.stderr, "dynalite"))]
            if await _wait_tcp(host, port, proc, time.monotonic() + 20):
                endpoint.table_processes.append(proc)
                endpoint.spare.append(f"http://{host}:{port}")
                break
            await procs.kill(proc)
        else:
            raise RuntimeError("dynalite did not start")


async def _wait_tcp(host: str, port: int, proc: asyncio.subprocess.Process, deadline: float) -> bool:
    while time.monotonic() < deadline and proc.returncode is None:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return True
        except OSError:
            await asyncio.sleep(0.05)
    return False


async def _start_moto(host: str, credentials: dict[str, str], processes: int,
                      attempts: int = 3) -> Endpoint:
    for _ in range(attempts):
        ports = _free_ports(host, processes)  # tiny race with other processes: retried below
        proc = await procs.spawn(
            # moto, patched (moto_patches: DynamoDB's per-item atomicity and more); one process per
            # port, forked from this one (its process group: procs.kill stops them all).
            [sys.executable, "-m", "herald_local.moto_server", "-H", host,
             "-p", ",".join(map(str, ports))],
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        # moto logs every request at INFO on stderr; only keep what looks like trouble.
        tasks = [asyncio.create_task(_drain_moto(proc.stdout)),
                 asyncio.create_task(_drain_moto(proc.stderr))]
        urls = [f"http://{host}:{port}" for port in ports]
        deadline = time.monotonic() + 20
        if all([await _wait_http(url + "/moto-api/", proc, deadline) for url in urls]):
            return Endpoint(url=urls[0], region=MOTO_REGION, credentials=dict(credentials),
                            process=proc, log_tasks=tasks, spare=urls[1:])
        await procs.kill(proc)
    raise RuntimeError("moto server did not start")


def _free_ports(host: str, count: int) -> list[int]:
    """`count` distinct free ports (each socket held until all are picked)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# werkzeug's access log and start-up chatter; anything else moto prints (tracebacks) is shown.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MOTO_NOISE = re.compile(r'^(\S+ - - \[|\s*\* |WARNING: This is a development|Press CTRL\+C|Dynalite listening)')


async def _drain_moto(stream: asyncio.StreamReader | None, name: str = "moto") -> None:
    if stream is None:
        return
    async for raw in stream:
        line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
        if line and not _MOTO_NOISE.match(line):
            log.warning("[%s] %s", name, line)


async def _wait_http(url: str, proc: asyncio.subprocess.Process, deadline: float) -> bool:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False

    while time.monotonic() < deadline and proc.returncode is None:
        if await asyncio.to_thread(probe):
            return True
        await asyncio.sleep(0.05)
    return False


def account_id(endpoint: Endpoint) -> str:
    """The endpoint's account (moto 123456789012, LocalStack 000000000000, AWS: yours)."""
    try:
        return endpoint.client("sts").get_caller_identity()["Account"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return "123456789012"


# --- provisioning ------------------------------------------------------------------------

@dataclass
class Provisioned:
    """What the ready file and the event sources need to know about created resources."""
    tables: dict[str, str] = field(default_factory=dict)   # logical id -> table name
    queues: dict[str, str] = field(default_factory=dict)   # logical id -> queue URL
    queue_urls_by_arn: dict[str, str] = field(default_factory=dict)
    schedule_groups: dict[str, str] = field(default_factory=dict)  # logical id -> group name
    buckets: dict[str, str] = field(default_factory=dict)  # logical id -> bucket name


def generated_name(resolver: Resolver, logical_id: str) -> str:
    """`<stack name>-<LogicalId>`: what a resource without an explicit name is called (AWS
    generates names that start with the stack name too)."""
    return f"{resolver.refs['AWS::StackName']}-{logical_id}"


def physical_name(resolver: Resolver, resource: Resource, props: dict[str, Any], name_key: str) -> str:
    """The template's explicit name, else the generated one (see runtime-contract.md)."""
    return str(props.get(name_key) or generated_name(resolver, resource.logical_id))


def api_id(logical_id: str) -> str:
    """A stable 10-character id shaped like API Gateway's."""
    return hashlib.sha1(logical_id.encode()).hexdigest()[:10]


def register_unprovisioned(resolver: Resolver, template: Template) -> None:
    """Give every resource the stack does not create a plausible Ref and Arn.

    Functions, roles and APIs are not created on the endpoint, but the template refers to them
    (ARNs in environment variables, integration URIs...). Other resource types get their logical
    id so that an unrelated alarm or log group never blocks resolution.
    """
    region, account = resolver.refs["AWS::Region"], resolver.refs["AWS::AccountId"]
    for res in template.resources.values():
        lid, props = res.logical_id, res.properties
        if res.type in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            name = function_name(resolver, res)
            arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
            resolver.refs[lid] = name
            resolver.attrs[(lid, "Arn")] = arn
        elif res.type == "AWS::IAM::Role":
            name = str(resolver.resolve(props.get("RoleName")) or generated_name(resolver, lid))
            resolver.refs[lid] = name
            resolver.attrs[(lid, "Arn")] = f"arn:aws:iam::{account}:role/{name}"
            resolver.attrs[(lid, "RoleId")] = api_id(lid).upper()
        elif res.type in ("AWS::ApiGatewayV2::Api", "AWS::Serverless::HttpApi"):
            resolver.refs[lid] = api_id(lid)
            resolver.attrs[(lid, "ApiId")] = api_id(lid)
            resolver.attrs[(lid, "ApiEndpoint")] = (
                f"https://{api_id(lid)}.execute-api.{region}.amazonaws.com")
        elif res.type not in _PROVISIONERS:
            resolver.refs[lid] = lid
            resolver.attrs[(lid, "Arn")] = f"arn:aws:local:{region}:{account}:{lid}"


def function_name(resolver: Resolver, res: Resource) -> str:
    try:
        explicit = resolver.resolve(res.properties.get("FunctionName"))
    except Unresolved:
        explicit = None
    return str(explicit or generated_name(resolver, res.logical_id))


def provision(endpoint: Endpoint, template: Template, resolver: Resolver,
              visibility_timeout: int | None) -> Provisioned:
    """Create tables, queues and schedule groups (blocking; run it in a thread)."""
    out = Provisioned()
    clients: dict[tuple[str, str], Any] = {}

    def client(service: str, table: str | None = None) -> Any:
        """A client of the service; for a table's DynamoDB calls, of the process serving it."""
        url = endpoint.place_table(table) if table is not None else endpoint.url
        if (service, url) not in clients:
            clients[(service, url)] = endpoint.client(service, url=url)
        return clients[(service, url)]

    remaining = [r for r in template.of_type(*_PROVISIONERS) if resolver.included(r)]
    while remaining:
        progressed = False
        for res in list(remaining):
            try:
                props = resolver.resolve(res.properties)
            except Unresolved:
                continue
            _PROVISIONERS[res.type](client, res, props, resolver, out, visibility_timeout)
            remaining.remove(res)
            progressed = True
        if not progressed:
            blocked = ", ".join(r.logical_id for r in remaining)
            raise TemplateError(f"cannot order the creation of {blocked} (reference cycle?)")
    return out


def has_own_process(table_properties: dict[str, Any]) -> bool:
    """Whether a table gets a moto process of its own (`open_endpoint`). One with a stream stays
    with the endpoint: its stream calls name no table to route by."""
    return "StreamSpecification" not in table_properties


_TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "BillingMode", "ProvisionedThroughput",
               "StreamSpecification", "TableClass")
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")


def wait_active(ddb: Any, name: str, timeout: float = 10.0) -> None:
    """Returns once `name` is ACTIVE, as CloudFormation does before a stack is complete. A
    table answers "not found" while CREATING, and dynalite finishes even a 0 ms creation on a
    later turn of its loop, so a caller that queries straight after CreateTable can race it."""
    deadline = time.monotonic() + timeout
    while ddb.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {name} is not ACTIVE after {timeout} s")
        time.sleep(0.01)


def _create_table(client: Any, res: Resource, props: dict[str, Any], resolver: Resolver,
                  out: Provisioned, _vt: int | None) -> None:
    name = physical_name(resolver, res, props, "TableName")
    ddb = client("dynamodb", name if has_own_process(props) else None)
    args: dict[str, Any] = {k: props[k] for k in _TABLE_KEYS if k in props}
    args.setdefault("BillingMode", "PROVISIONED" if "ProvisionedThroughput" in props
                    else "PAY_PER_REQUEST")
    for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(kind):
            args[kind] = [{k: idx[k] for k in _INDEX_KEYS if k in idx} for idx in props[kind]]
    if "StreamSpecification" in args:
        args["StreamSpecification"] = {"StreamEnabled": True, **args["StreamSpecification"]}
    if props.get("Tags"):
        args["Tags"] = props["Tags"]
    try:
        desc = ddb.create_table(TableName=name, **args)["TableDescription"]
    except ddb.exceptions.ResourceInUseException:  # a persistent endpoint already has it
        desc = ddb.describe_table(TableName=name)["Table"]
    wait_active(ddb, name)
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        try:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": ttl["AttributeName"]})
        except botocore.exceptions.ClientError as exc:  # "already enabled" on a reused table
            log.debug("TTL on %s: %s", name, exc)
    resolver.refs[res.logical_id] = name
    resolver.attrs[(res.logical_id, "Arn")] = desc["TableArn"]
    if desc.get("LatestStreamArn"):
        resolver.attrs[(res.logical_id, "StreamArn")] = desc["LatestStreamArn"]
    out.tables[res.logical_id] = name


# CloudFormation property names of AWS::SQS::Queue that are queue attributes of the same name.
_QUEUE_ATTRIBUTES = ("DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod",
                     "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout", "FifoQueue",
                     "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
                     "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled",
                     "RedrivePolicy", "RedriveAllowPolicy")


def _attr_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _create_queue(client: Any, res: Resource, props: dict[str, Any], resolver: Resolver,
                  out: Provisioned, visibility_timeout: int | None) -> None:
    name = physical_name(resolver, res, props, "QueueName")
    if props.get("FifoQueue") in (True, "true") and not name.endswith(".fifo"):
        name += ".fifo"
    attributes = {k: _attr_value(props[k]) for k in _QUEUE_ATTRIBUTES if k in props}
    if visibility_timeout is not None:
        attributes["VisibilityTimeout"] = str(visibility_timeout)
    sqs = client("sqs")
    tags = {t["Key"]: t["Value"] for t in props.get("Tags") or []}
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attributes,
                               **({"tags": tags} if tags else {}))["QueueUrl"]
    except sqs.exceptions.QueueNameExists:  # reused endpoint with other attributes
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes.pop("FifoQueue", None)
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    resolver.refs[res.logical_id] = url
    resolver.attrs.update({(res.logical_id, "Arn"): arn, (res.logical_id, "QueueName"): name,
                           (res.logical_id, "QueueUrl"): url})
    out.queues[res.logical_id] = url
    out.queue_urls_by_arn[arn] = url


def _create_schedule_group(client: Any, res: Resource, props: dict[str, Any], resolver: Resolver,
                           out: Provisioned, _vt: int | None) -> None:
    name = physical_name(resolver, res, props, "Name")
    scheduler = client("scheduler")
    try:
        arn = scheduler.create_schedule_group(Name=name)["ScheduleGroupArn"]
    except scheduler.exceptions.ConflictException:
        arn = scheduler.get_schedule_group(Name=name)["Arn"]
    resolver.refs[res.logical_id] = name
    resolver.attrs[(res.logical_id, "Arn")] = arn
    out.schedule_groups[res.logical_id] = name


def _create_bucket(client: Any, res: Resource, props: dict[str, Any], resolver: Resolver,
                   out: Provisioned, _vt: int | None) -> None:
    """An S3 bucket with the template's encryption, public access block, lifecycle and CORS
    (the CloudFormation property shapes translated to the API's). Bucket names are lower case:
    a generated one is lowered, as CloudFormation does."""
    name = physical_name(resolver, res, props, "BucketName").lower()
    s3 = client("s3")
    try:
        if resolver.refs["AWS::Region"] == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={
                "LocationConstraint": resolver.refs["AWS::Region"]})
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass   # a persistent endpoint already has it
    encryption = props.get("BucketEncryption") or {}
    if encryption.get("ServerSideEncryptionConfiguration"):
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": r.get("ServerSideEncryptionByDefault") or {},
             **({"BucketKeyEnabled": bool(r["BucketKeyEnabled"])} if "BucketKeyEnabled" in r else {})}
            for r in encryption["ServerSideEncryptionConfiguration"]]})
    if props.get("PublicAccessBlockConfiguration"):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
            k: bool(v) for k, v in props["PublicAccessBlockConfiguration"].items()})
    rules = (props.get("LifecycleConfiguration") or {}).get("Rules") or []
    if rules:
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
            {"ID": r.get("Id", f"rule{i}"), "Status": r.get("Status", "Enabled"),
             "Filter": {"Prefix": r.get("Prefix", "")},
             **({"Expiration": {"Days": int(r["ExpirationInDays"])}} if "ExpirationInDays" in r else {}),
             **({"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": int(
                 r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}}
                if "AbortIncompleteMultipartUpload" in r else {})}
            for i, r in enumerate(rules)]})
    cors = (props.get("CorsConfiguration") or {}).get("CorsRules") or []
    if cors:
        s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [
            {k: v for k, v in {"AllowedOrigins": r.get("AllowedOrigins"),
                               "AllowedMethods": r.get("AllowedMethods"),
                               "AllowedHeaders": r.get("AllowedHeaders"),
                               "ExposeHeaders": r.get("ExposedHeaders"),
                               "MaxAgeSeconds": int(r["MaxAge"]) if "MaxAge" in r else None}.items()
             if v is not None}
            for r in cors]})
    resolver.refs[res.logical_id] = name
    resolver.attrs.update({(res.logical_id, "Arn"): f"arn:aws:s3:::{name}",
                           (res.logical_id, "DomainName"): f"{name}.s3.amazonaws.com"})
    out.buckets[res.logical_id] = name


_PROVISIONERS = {
    "AWS::DynamoDB::Table": _create_table,
    "AWS::SQS::Queue": _create_queue,
    "AWS::Scheduler::ScheduleGroup": _create_schedule_group,
    "AWS::S3::Bucket": _create_bucket,
}
