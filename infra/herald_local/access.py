"""Each function's own identity, and what it may call: the local stack's IAM.

Every function runs with an access key of its own (`Identities`); the AWS endpoint proxy and the
@connections API look the key up, turn the request into IAM requests (`classify_aws`: the
action, the resource ARN and the condition keys each call is authorized on) and ask `Access` to
decide them with the role's statements from the template (iam.py). A refused call is answered as
that service answers AccessDenied, and logged with the function, action and resource. `Access`
also records which grants each call used (the grant report: `python -m herald_local grants`).

The stack's own credentials (its pollers, provisioning, the tests' clients) are not a function's
and are not checked, as an administrator's would be allowed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import iam
from .iam import Decision, Policies, Principal, Request, Role

log = logging.getLogger("herald_local")

# Where the grant usage of every stack goes when set (one JSON-lines file per stack): `make test`
# collects them for its grant report.
GRANTS_DIR_ENV = "HERALD_LOCAL_GRANTS_DIR"
# Decisions remembered per (function, action, resource, the condition keys its policies test):
# the proxy decides every call of every function, and most repeat (same table, same queue).
MEMO_SIZE = 20_000


@dataclass(frozen=True)
class Identity:
    function: str          # the function's key (its Handler), as logs name it
    logical_id: str
    name: str              # its function name: the role session name on Lambda
    access_key: str
    secret_key: str
    role: Role | None      # None: the template gives it no Role (not enforced)

    @property
    def principal(self) -> Principal:
        arn = self.role.arn if self.role else ""
        account = arn.split(":")[4] if arn.count(":") >= 5 else ""
        return Principal(arn=arn, account=account)

    @property
    def session_arn(self) -> str:
        """What AWS names the caller in an AccessDenied message: the assumed role's session."""
        if self.role is None:
            return self.name
        account = self.principal.account
        return f"arn:aws:sts::{account}:assumed-role/{self.role.arn.rsplit('/', 1)[-1]}/{self.name}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def access_key_for(function: str) -> str:
    """A stable, AWS-shaped access key id per function (20 characters, upper case)."""
    digest = hashlib.sha256(function.encode()).hexdigest().upper()
    return "AKIAHL" + digest[:14]


@dataclass(frozen=True)
class Call:
    """One AWS API call, as the grant report lists it."""
    function: str
    action: str
    resource: str


class Access:
    """Decides the functions' calls and records what they used."""

    def __init__(self, policies: Policies, identities: list[Identity] | None = None, *,
                 enforce: bool = True, record_to: Path | None = None) -> None:
        self.policies = policies
        self.enforce = enforce
        self._by_key: dict[str, Identity] = {}
        self.identities: list[Identity] = []
        for identity in identities or []:
            self.add(identity)
        self._lock = threading.Lock()
        self._memo: dict[tuple[Any, ...], Decision] = {}
        self._condition_keys: dict[tuple[str, str], frozenset[str]] = {}
        self.used: dict[Call, set[iam.Grant]] = {}
        self.denied: dict[Call, str] = {}
        self._record_to = record_to
        if record_to is not None:
            record_to.parent.mkdir(parents=True, exist_ok=True)

    def add(self, identity: Identity) -> None:
        if identity.access_key:
            self._by_key[identity.access_key] = identity
        self.identities.append(identity)

    def identity(self, access_key: str | None) -> Identity | None:
        return self._by_key.get(access_key or "")

    def of_function(self, function: str) -> Identity | None:
        return next((i for i in self.identities if i.function == function), None)

    def service_identity(self, service: str, role_arn: str) -> Identity | None:
        """A service acting with a role handed to it (Scheduler with a schedule's RoleArn), for
        `decide`; None if the template has no such role."""
        known = next((i for i in self.identities if i.function == service and i.role is not None
                      and i.role.arn == role_arn), None)
        if known is not None:
            return known
        role = self.policies.roles.get(role_arn)
        if role is None:
            return None
        identity = Identity(function=service, logical_id=role.logical_id, name=service,
                            access_key="", secret_key="", role=role)
        self.add(identity)
        return identity

    def decide(self, who: Identity, request: Request) -> Decision:
        """The decision on one request of `who`, recorded (and logged when refused). With
        enforcement off, a refusal is still recorded and logged, but allowed."""
        if who.role is None:
            return Decision(allowed=True)
        principal = who.principal
        context = {"aws:principalarn": (principal.arn,), "aws:principalaccount": (principal.account,),
                   "aws:securetransport": ("true",),   # AWS endpoints are https
                   **request.context}
        full = Request(request.action, request.resource, context)
        resource_policy = self.policies.resource_policies.get(request.resource) \
            or self.policies.resource_policies.get(iam.bucket_arn(request.resource) or "", ())
        # Only the condition keys the policies test can change the decision: the rest of the
        # context (a DynamoDB item's partition key, mostly) stays out of the memo's key.
        keys = self._keys_tested(who.role, request.resource, resource_policy)
        memo = (who.function, who.role.arn, request.action, request.resource,
                tuple((k, context[k]) for k in sorted(keys) if k in context))
        decision = self._memo.get(memo)
        if decision is None:
            decision = iam.evaluate(full, principal, who.role.statements, resource_policy)
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[memo] = decision
            self._record(who, full, decision)   # a repeat records nothing new
        elif not decision.allowed:
            self._log_refusal(who, full, decision)
        if not decision.allowed and not self.enforce:
            return Decision(allowed=True, grants=decision.grants)
        return decision

    def _keys_tested(self, role: Role, resource: str, resource_policy: Any) -> frozenset[str]:
        cached = self._condition_keys.get((role.arn, resource))
        if cached is None:
            cached = frozenset(key.lower() for statement in [*role.statements, *resource_policy]
                               for _, key, _ in statement.conditions)
            self._condition_keys[(role.arn, resource)] = cached
        return cached

    def message(self, who: Identity, request: Request, decision: Decision) -> str:
        return (f"User: {who.session_arn} is not authorized to perform: {request.action} on "
                f"resource: {request.resource} {decision.reason(request)}")

    def _record(self, who: Identity, request: Request, decision: Decision) -> None:
        call = Call(who.function, request.action, _generalize(request.resource))
        new: dict[str, Any] | None = None
        with self._lock:
            if decision.allowed:
                grants = self.used.setdefault(call, set())
                fresh = set(decision.grants) - grants
                if fresh:
                    grants |= fresh
                    new = {"allowed": True, "grants": sorted([g.origin, g.action, g.resource] for g in fresh)}
            elif call not in self.denied:
                self.denied[call] = decision.reason(request)
                new = {"allowed": False, "reason": self.denied[call]}
        if not decision.allowed:
            self._log_refusal(who, request, decision)
        if new is not None and self._record_to is not None:
            line = json.dumps({"function": call.function, "action": call.action,
                               "resource": call.resource, **new})
            with self._lock, open(self._record_to, "a") as out:
                out.write(line + "\n")

    def record_universe(self) -> None:
        """Write every grant of every identity to the usage file, once: the grant report tells
        the unused ones from it."""
        if self._record_to is None:
            return
        universe = {i.function: sorted([g.origin, g.action, g.resource] for g in i.role.grants())
                    for i in self.identities if i.role is not None}
        with self._lock, open(self._record_to, "a") as out:
            out.write(json.dumps({"universe": universe}) + "\n")

    def _log_refusal(self, who: Identity, request: Request, decision: Decision) -> None:
        log.warning("IAM: %s (%s) denied %s on %s %s%s", who.function,
                    who.role.logical_id if who.role else "-", request.action, request.resource,
                    decision.reason(request), "" if self.enforce else " (not enforced)")

    def report(self) -> dict[str, Any]:
        """What the control API answers: calls used and refused, grants no call used."""
        with self._lock:
            used = {(g.origin, g.action, g.resource) for grants in self.used.values() for g in grants}
            return {
                "enforced": self.enforce,
                "used": [{"function": c.function, "action": c.action, "resource": c.resource,
                          "grants": sorted([g.origin, g.action, g.resource] for g in grants)}
                         for c, grants in sorted(self.used.items(), key=lambda kv: _key(kv[0]))],
                "denied": [{"function": c.function, "action": c.action, "resource": c.resource,
                            "reason": reason} for c, reason in sorted(self.denied.items(), key=lambda kv: _key(kv[0]))],
                "unused": [{"function": i.function, "grant": [g.origin, g.action, g.resource]}
                           for i in self.identities if i.role is not None
                           for g in i.role.grants() if (g.origin, g.action, g.resource) not in used],
                "roles": {i.function: i.role.logical_id for i in self.identities if i.role is not None},
            }


def _key(call: Call) -> tuple[str, str, str]:
    return (call.function, call.action, call.resource)


_CONNECTION = re.compile(r"(/@connections/)[^/]+$")
_SCHEDULE = re.compile(r"(:schedule/[^/]+/).+$")


def _generalize(resource: str) -> str:
    """A resource ARN with the part that differs per call (a connection id, a schedule name)
    replaced, so that the report lists kinds of calls, not every connection."""
    if "/@connections/" in resource:
        return _CONNECTION.sub(r"\1{id}", resource)
    if ":schedule/" in resource:
        return _SCHEDULE.sub(r"\1{name}", resource)
    return resource


# --- requests of the AWS endpoint -----------------------------------------------------------

@dataclass
class Target:
    """What the classifier needs to know about the stack's resources."""
    region: str
    account: str
    hash_keys: dict[str, str] = field(default_factory=dict)   # table name -> partition key name

    def table_arn(self, table: str) -> str:
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{table}"

    def queue_arn(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url).path.strip("/").split("/")
        account, name = (parts[-2], parts[-1]) if len(parts) >= 2 else (self.account, parts[-1])
        return f"arn:aws:sqs:{self.region}:{account}:{name}"

    def schedule_arn(self, group: str, name: str) -> str:
        return f"arn:aws:scheduler:{self.region}:{self.account}:schedule/{group}/{name}"


class Unclassified(Exception):
    """A request the classifier does not know how to authorize (refused: AWS would need a grant
    for it, and the local stack cannot tell which)."""


def credential_of(headers: Any, query: Any = None) -> tuple[str, str] | None:
    """(access key, service) from a SigV4 Authorization header, or from a presigned URL's
    `X-Amz-Credential` (an S3 upload or download a function signed: AWS authorizes it against
    the signer's role, so the stack does too)."""
    header = headers.get("Authorization") or ""
    match = re.search(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/aws4_request", header)
    if match is None and query is not None:
        match = re.fullmatch(r"([^/]+)/[^/]+/[^/]+/([^/]+)/aws4_request", query.get("X-Amz-Credential") or "")
    return (match.group(1), match.group(2)) if match else None


def classify_aws(service: str, method: str, path: str, query: dict[str, str], headers: Any,
                 body: bytes, target: Target) -> list[Request]:
    """The IAM requests one call to DynamoDB, SQS or EventBridge Scheduler is authorized on."""
    if service == "dynamodb":
        return _dynamodb(headers.get("X-Amz-Target", ""), _json(body), target)
    if service == "sqs":
        return _sqs(headers, body, target)
    if service == "scheduler":
        return _scheduler(method, path, query, _json(body), target)
    if service == "s3":
        return _s3(method, path, query)
    raise Unclassified(f"calls to {service or 'an unknown service'} are not modelled")


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# DynamoDB: operations whose IAM action is not their own name, per item of a transaction.
_TRANSACT = {"ConditionCheck": "ConditionCheckItem", "Put": "PutItem", "Update": "UpdateItem",
             "Delete": "DeleteItem", "Get": "GetItem"}


def _hash_value(item: Any, key: str | None) -> list[str]:
    if not key or not isinstance(item, dict) or not isinstance(item.get(key), dict):
        return []
    value = item[key]
    return [str(next(iter(value.values())))] if value else []


def _query_leading_keys(doc: dict[str, Any], key: str | None) -> list[str]:
    """The partition key value a Query's KeyConditionExpression fixes (`#pk = :v` or `pk = :v`)."""
    expression = doc.get("KeyConditionExpression") or ""
    names = doc.get("ExpressionAttributeNames") or {}
    values = doc.get("ExpressionAttributeValues") or {}
    for left, right in re.findall(r"([#\w]+)\s*=\s*(:\w+)", expression):
        if names.get(left, left) == key and right in values:
            return _hash_value({"k": values[right]}, "k")
    return []


def _dynamodb(amz_target: str, doc: dict[str, Any], target: Target) -> list[Request]:
    operation = amz_target.partition(".")[2]
    if not operation:
        raise Unclassified("a DynamoDB call without X-Amz-Target")
    out: list[Request] = []

    def add(action: str, table: str, leading: list[str], index: str | None = None) -> None:
        resource = target.table_arn(table) + (f"/index/{index}" if index else "")
        context = {"dynamodb:leadingkeys": tuple(leading)} if leading else {}
        out.append(Request(f"dynamodb:{action}", resource, context))

    table = doc.get("TableName")
    if operation in ("BatchGetItem", "BatchWriteItem"):
        for name, spec in (doc.get("RequestItems") or {}).items():
            key = target.hash_keys.get(name)
            if operation == "BatchGetItem":
                leading = [v for k in (spec or {}).get("Keys") or [] for v in _hash_value(k, key)]
            else:
                leading = [v for r in spec or [] for v in
                           _hash_value((r.get("PutRequest") or {}).get("Item")
                                       or (r.get("DeleteRequest") or {}).get("Key"), key)]
            add(operation, name, sorted(set(leading)))
    elif operation in ("TransactWriteItems", "TransactGetItems"):
        for item in doc.get("TransactItems") or []:
            for kind, spec in item.items():
                name = spec.get("TableName", "")
                key = target.hash_keys.get(name)
                add(_TRANSACT.get(kind, kind), name, _hash_value(spec.get("Key") or spec.get("Item"), key))
    elif isinstance(table, str):
        key = target.hash_keys.get(table)
        if operation == "Query":
            leading = _query_leading_keys(doc, key)
        else:
            leading = _hash_value(doc.get("Key") or doc.get("Item"), key)
        add(operation, table, leading, doc.get("IndexName") if operation in ("Query", "Scan") else None)
    else:
        out.append(Request(f"dynamodb:{operation}", "*"))   # ListTables and the like
    return out


# SQS: batch calls are authorized as their single-message action.
_SQS_ACTIONS = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
                "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}


def sqs_protocol(headers: Any) -> str:
    return "json" if headers.get("X-Amz-Target", "").startswith("AmazonSQS.") else "query"


def _sqs(headers: Any, body: bytes, target: Target) -> list[Request]:
    if sqs_protocol(headers) == "json":
        operation = headers["X-Amz-Target"].partition(".")[2]
        doc = _json(body)
        url, name = doc.get("QueueUrl"), doc.get("QueueName")
    else:
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        operation, url, name = form.get("Action", ""), form.get("QueueUrl"), form.get("QueueName")
    action = "sqs:" + _SQS_ACTIONS.get(operation, operation)
    if url:
        return [Request(action, target.queue_arn(str(url)))]
    if name:
        return [Request(action, f"arn:aws:sqs:{target.region}:{target.account}:{name}")]
    return [Request(action, "*")]   # ListQueues


def _scheduler(method: str, path: str, query: dict[str, str], doc: dict[str, Any],
               target: Target) -> list[Request]:
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
    if parts[0] == "schedules" and len(parts) == 2:
        operation = {"POST": "CreateSchedule", "PUT": "UpdateSchedule", "GET": "GetSchedule",
                     "DELETE": "DeleteSchedule"}.get(method)
        if operation is None:
            raise Unclassified(f"{method} {path}")
        group = (doc.get("GroupName") if method in ("POST", "PUT") else query.get("groupName")) or "default"
        out = [Request(f"scheduler:{operation}", target.schedule_arn(group, parts[1]))]
        role = (doc.get("Target") or {}).get("RoleArn")
        if operation in ("CreateSchedule", "UpdateSchedule") and role:
            # Handing Scheduler a role is passing it: iam:PassRole on that role.
            out.append(Request("iam:PassRole", str(role),
                               {"iam:passedtoservice": ("scheduler.amazonaws.com",)}))
        return out
    if parts[0] == "schedules" and method == "GET":
        return [Request("scheduler:ListSchedules", "*")]
    if parts[0] == "schedule-groups":
        operation = {"POST": "CreateScheduleGroup", "GET": "GetScheduleGroup" if len(parts) == 2
                     else "ListScheduleGroups", "DELETE": "DeleteScheduleGroup"}.get(method, "")
        name = parts[1] if len(parts) == 2 else "*"
        return [Request(f"scheduler:{operation}",
                        f"arn:aws:scheduler:{target.region}:{target.account}:schedule-group/{name}")]
    raise Unclassified(f"{method} {path}")


def _s3(method: str, path: str, query: dict[str, str]) -> list[Request]:
    """Object reads and writes, path-style (`/bucket/key`), as presigned URLs make them. A CORS
    preflight (OPTIONS) is authorized by the bucket's CORS rules, not by IAM: S3 answers it
    without looking at credentials, so it needs no grant."""
    if method == "OPTIONS":
        return []
    bucket, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
    if not bucket or not key or any(k in query for k in ("uploads", "uploadId", "acl", "tagging")):
        raise Unclassified(f"S3 {method} {path} (only single object GET/HEAD/PUT/DELETE are modelled)")
    action = {"GET": "GetObject", "HEAD": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(method)
    if action is None:
        raise Unclassified(f"S3 {method} {path}")
    return [Request(f"s3:{action}", f"arn:aws:s3:::{bucket}/{key}")]


# --- what a refusal looks like, per service -------------------------------------------------

def denied_response(service: str, headers: Any, message: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of AccessDenied as each service's protocol carries it."""
    if service == "dynamodb":   # awsJson1_0: 400 and the type in the body
        return 400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(
            {"__type": "com.amazon.coral.service#AccessDeniedException", "message": message}).encode()
    if service == "sqs" and sqs_protocol(headers) == "json":
        # awsJson1_0 with awsQueryCompatible: the SDKs read the query error code from this header.
        return 403, {"Content-Type": "application/x-amz-json-1.0",
                     "x-amzn-query-error": "AccessDenied;Sender"}, json.dumps(
            {"__type": "com.amazon.coral.service#AccessDeniedException", "message": message}).encode()
    if service == "sqs":
        body = ("<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">"
                f"<Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{_xml(message)}</Message>"
                "<Detail/></Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>")
        return 403, {"Content-Type": "text/xml"}, body.encode()
    if service == "s3":   # restXml
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                f"<Message>{_xml(message)}</Message></Error>")
        return 403, {"Content-Type": "application/xml"}, body.encode()
    # restJson1 services (Scheduler, the @connections API): the type in x-amzn-ErrorType.
    return 403, {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException"}, \
        json.dumps({"Message": message}).encode()


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def grants_file(directory: str | None = None) -> Path | None:
    """This stack's usage file under $HERALD_LOCAL_GRANTS_DIR, if set."""
    directory = directory or os.environ.get(GRANTS_DIR_ENV)
    return Path(directory) / f"stack-{os.getpid()}.jsonl" if directory else None


# --- the grant report over several stacks (`python -m herald_local grants DIR`) -------------

# Services the local stack serves, so a grant of theirs can be exercised by a test. Grants for
# the others (CloudWatch Logs, X-Ray: Lambda's runtime uses them, not Herald's code) cannot.
EMULATED = ("dynamodb:", "sqs:", "scheduler:", "iam:passrole", "execute-api:", "lambda:invokefunction", "s3:")


def summarize(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Usage records of one or more stacks (access.grants_file) as one report: refused calls,
    and the grants of emulated services that no call used."""
    universe: dict[str, set[tuple[str, str, str]]] = {}
    used: dict[str, set[tuple[str, str, str]]] = {}
    calls: set[tuple[str, str, str]] = set()
    denied: dict[tuple[str, str, str], str] = {}
    for line in lines:
        if "universe" in line:
            for function, grants in line["universe"].items():
                universe.setdefault(function, set()).update(tuple(g) for g in grants)
            continue
        call = (line["function"], line["action"], line["resource"])
        if line.get("allowed"):
            calls.add(call)
            used.setdefault(line["function"], set()).update(tuple(g) for g in line.get("grants", []))
        else:
            denied.setdefault(call, line.get("reason", ""))
    unused = {f: sorted(g for g in grants - used.get(f, set())
                        if g[1].lower().startswith(EMULATED) or g[1] == "NotAction")
              for f, grants in universe.items()}
    not_emulated = {f: sorted(g for g in grants if not (g[1].lower().startswith(EMULATED) or g[1] == "NotAction"))
                    for f, grants in universe.items()}
    return {"calls": sorted(calls), "denied": sorted((*c, r) for c, r in denied.items()),
            "unused": {f: g for f, g in unused.items() if g},
            "not_emulated": {f: g for f, g in not_emulated.items() if g}}


def documented(grant: tuple[str, str, str], text: str) -> bool:
    """Whether a line of the deploy guide names this grant: its role, its statement's Sid and
    its action (docs/deploy.md lists the grants no test exercises, with the reason)."""
    origin, action, _ = grant
    role = origin.split("/", 1)[0]
    sid = origin.partition("#")[2]
    return any(role in line and (not sid or sid in line) and action in line for line in text.splitlines())
