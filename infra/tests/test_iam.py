"""IAM as the local stack enforces it: the policy evaluator (iam.py), how calls become IAM
requests and refusals (access.py), Herald's own template, and the stack refusing a fake
function's call and sending a failed reminder to its dead-letter queue."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

import aiohttp
import botocore.session
from botocore.awsrequest import HeadersDict
import pytest
from botocore.model import ServiceModel
from botocore.parsers import create_parser

from conftest import Stack, poll
from herald_local import aws, iam
from herald_local.access import (Target, classify_aws, credential_of, denied_response, documented, summarize,
                                 Unclassified)
from herald_local.template import Resolver, Template

ACCOUNT, REGION = "123456789012", "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/app-Role"
ME = iam.Principal(ROLE, ACCOUNT)
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/app-T"
QUEUE = f"arn:aws:sqs:{REGION}:{ACCOUNT}:app-Q"


def statements(*docs: dict, resource_policy: bool = False) -> list[iam.Statement]:
    return [iam.Statement.parse(d, f"Test#{i}", resource_policy) for i, d in enumerate(docs)]


def allowed(action: str, resource: str, policy: list[iam.Statement],
            queue_policy: list[iam.Statement] = (), **context: tuple[str, ...]) -> bool:
    ctx = {"aws:principalarn": (ROLE,), **{k.replace("__", ":"): v for k, v in context.items()}}
    return iam.evaluate(iam.Request(action, resource, ctx), ME, policy, queue_policy).allowed


# --- the evaluator ----------------------------------------------------------------------

def test_actions_match_with_wildcards_and_without_case() -> None:
    policy = statements({"Effect": "Allow", "Action": ["dynamodb:Get*", "sqs:sendmessage"],
                         "Resource": "*"})
    assert allowed("dynamodb:GetItem", TABLE, policy)
    assert allowed("sqs:SendMessage", QUEUE, policy)
    assert not allowed("dynamodb:PutItem", TABLE, policy)
    assert not allowed("dynamodb:BatchGetItem", TABLE, policy)   # Get* is a prefix, not a substring


def test_resources_match_tables_and_their_indexes_apart() -> None:
    policy = statements({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": f"{TABLE}/index/*"})
    assert allowed("dynamodb:Query", f"{TABLE}/index/byUser", policy)
    assert not allowed("dynamodb:Query", TABLE, policy)
    assert not allowed("dynamodb:Query", f"{TABLE}-other/index/byUser", policy)


def test_nothing_is_allowed_without_an_allow() -> None:
    decision = iam.evaluate(iam.Request("sqs:SendMessage", QUEUE), ME, [])
    assert not decision.allowed
    assert decision.reason(iam.Request("sqs:SendMessage", QUEUE)) == \
        "because no identity-based policy allows the sqs:SendMessage action"


def test_an_explicit_deny_beats_any_allow() -> None:
    policy = statements({"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
                        {"Effect": "Deny", "Action": "sqs:SendMessage", "Resource": QUEUE})
    assert allowed("sqs:ReceiveMessage", QUEUE, policy)
    decision = iam.evaluate(iam.Request("sqs:SendMessage", QUEUE), ME, policy)
    assert not decision.allowed and decision.explicit_deny == "Test#1"


def test_not_action_and_not_resource() -> None:
    policy = statements({"Effect": "Allow", "NotAction": "sqs:Delete*", "NotResource": QUEUE})
    assert allowed("sqs:SendMessage", QUEUE + "-2", policy)
    assert not allowed("sqs:DeleteMessage", QUEUE + "-2", policy)
    assert not allowed("sqs:SendMessage", QUEUE, policy)


def test_a_resource_policy_deny_with_principal_condition() -> None:
    """The internal queue's shape: only the listed roles may send, whatever they are granted."""
    mine = statements({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": QUEUE})
    queue = statements({"Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage", "Resource": QUEUE,
                        "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [f"arn:aws:iam::{ACCOUNT}:role/other", ROLE]}}},
                       resource_policy=True)
    assert allowed("sqs:SendMessage", QUEUE, mine, queue)
    stranger = iam.Principal(f"arn:aws:iam::{ACCOUNT}:role/producer", ACCOUNT)
    decision = iam.evaluate(iam.Request("sqs:SendMessage", QUEUE, {"aws:principalarn": (stranger.arn,)}),
                            stranger, mine, queue)
    assert not decision.allowed and decision.explicit_deny


def test_a_resource_policy_allows_in_the_same_account() -> None:
    queue = statements({"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "sqs:SendMessage",
                        "Resource": QUEUE}, resource_policy=True)
    assert allowed("sqs:SendMessage", QUEUE, [], queue)
    other = statements({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/x"},
                        "Action": "sqs:SendMessage", "Resource": QUEUE}, resource_policy=True)
    assert not allowed("sqs:SendMessage", QUEUE, [], other)


def test_for_all_values_on_leading_keys() -> None:
    policy = statements({"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE,
                         "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["w#*"]}}})
    assert allowed("dynamodb:GetItem", TABLE, policy, dynamodb__leadingkeys=("w#1",))
    assert not allowed("dynamodb:GetItem", TABLE, policy, dynamodb__leadingkeys=("w#1", "n#2"))
    # As on AWS, ForAllValues holds for a request without the key (a reason to pair it with
    # the action: a Scan carries no leading keys).
    assert allowed("dynamodb:GetItem", TABLE, policy)


@pytest.mark.parametrize(("operator", "values", "context", "holds"), [
    ("StringEquals", ["scheduler.amazonaws.com"], ("scheduler.amazonaws.com",), True),
    ("StringEquals", ["scheduler.amazonaws.com"], ("lambda.amazonaws.com",), False),
    ("StringEquals", ["scheduler.amazonaws.com"], None, False),
    ("StringNotEquals", ["a"], None, True),
    ("StringEqualsIfExists", ["a"], None, True),
    ("StringLike", ["sched*"], ("scheduler.amazonaws.com",), True),
    ("ForAnyValue:StringEquals", ["a", "b"], ("c", "b"), True),
    ("ForAnyValue:StringEquals", ["a"], None, False),
    ("Bool", ["false"], ("true",), False),
    ("Null", ["true"], None, True),
    ("NumericLessThan", ["3"], ("1",), False),   # not modelled: never holds
])
def test_condition_operators(operator: str, values: list[str], context: tuple[str, ...] | None,
                             holds: bool) -> None:
    ctx = {} if context is None else {"k:key": context}
    assert iam.condition_holds(operator, "k:Key", tuple(values), ctx) is holds


# --- calls as IAM requests ----------------------------------------------------------------

TARGET = Target(REGION, ACCOUNT, {"app-T": "pk"})


def ddb(operation: str, doc: dict) -> list[iam.Request]:
    return classify_aws("dynamodb", "POST", "/", {}, {"X-Amz-Target": f"DynamoDB_20120810.{operation}"},
                        json.dumps(doc).encode(), TARGET)


def test_dynamodb_calls() -> None:
    [get] = ddb("GetItem", {"TableName": "app-T", "Key": {"pk": {"S": "w#1"}, "sk": {"S": "x"}}})
    assert (get.action, get.resource, get.context) == ("dynamodb:GetItem", TABLE, {"dynamodb:leadingkeys": ("w#1",)})
    [query] = ddb("Query", {"TableName": "app-T", "IndexName": "byUser",
                            "KeyConditionExpression": "#p = :p AND sk > :s",
                            "ExpressionAttributeNames": {"#p": "pk"},
                            "ExpressionAttributeValues": {":p": {"S": "u#1"}, ":s": {"S": "0"}}})
    assert (query.resource, query.context["dynamodb:leadingkeys"]) == (f"{TABLE}/index/byUser", ("u#1",))
    writes = ddb("TransactWriteItems", {"TransactItems": [
        {"ConditionCheck": {"TableName": "app-T", "Key": {"pk": {"S": "a"}}}},
        {"Put": {"TableName": "app-T", "Item": {"pk": {"S": "b"}}}}]})
    assert [w.action for w in writes] == ["dynamodb:ConditionCheckItem", "dynamodb:PutItem"]
    [batch] = ddb("BatchWriteItem", {"RequestItems": {"app-T": [
        {"PutRequest": {"Item": {"pk": {"S": "b"}}}}, {"DeleteRequest": {"Key": {"pk": {"S": "a"}}}}]}})
    assert (batch.action, batch.context["dynamodb:leadingkeys"]) == ("dynamodb:BatchWriteItem", ("a", "b"))


def test_sqs_calls_in_both_protocols() -> None:
    url = f"http://127.0.0.1:9/{ACCOUNT}/app-Q"
    [json_call] = classify_aws("sqs", "POST", "/", {}, {"X-Amz-Target": "AmazonSQS.SendMessageBatch"},
                               json.dumps({"QueueUrl": url}).encode(), TARGET)
    assert (json_call.action, json_call.resource) == ("sqs:SendMessage", QUEUE)
    [query_call] = classify_aws("sqs", "POST", "/", {}, {}, f"Action=DeleteMessageBatch&QueueUrl={url}".encode(), TARGET)
    assert (query_call.action, query_call.resource) == ("sqs:DeleteMessage", QUEUE)


def test_scheduler_calls_pass_the_role() -> None:
    body = json.dumps({"GroupName": "g", "Target": {"Arn": "arn:fn", "RoleArn": ROLE}}).encode()
    create, pass_role = classify_aws("scheduler", "POST", "/schedules/r-1", {}, {}, body, TARGET)
    assert (create.action, create.resource) == (
        "scheduler:CreateSchedule", f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/g/r-1")
    assert (pass_role.action, pass_role.resource) == ("iam:PassRole", ROLE)
    assert pass_role.context == {"iam:passedtoservice": ("scheduler.amazonaws.com",)}
    [delete] = classify_aws("scheduler", "DELETE", "/schedules/r-1", {"groupName": "g"}, {}, b"", TARGET)
    assert delete.resource.endswith(":schedule/g/r-1") and delete.action == "scheduler:DeleteSchedule"
    with pytest.raises(Unclassified):
        classify_aws("kms", "POST", "/", {}, {}, b"", TARGET)


def _parsed_error(service: str, operation: str, status: int, headers: dict, body: bytes) -> dict:
    """The error as botocore (the SDKs' shared models and protocols) parses the response."""
    model = ServiceModel(botocore.session.get_session().get_service_data(service))
    op = model.operation_model(operation)
    parser = create_parser(model.resolved_protocol if hasattr(model, "resolved_protocol") else model.protocol)
    return parser.parse({"status_code": status, "headers": HeadersDict(headers), "body": body},
                        op.output_shape)["Error"]


@pytest.mark.parametrize(("service", "model", "operation", "headers", "status", "code"), [
    ("dynamodb", "dynamodb", "PutItem", {}, 400, "AccessDeniedException"),
    ("sqs", "sqs", "SendMessage", {"X-Amz-Target": "AmazonSQS.SendMessage"}, 403, "AccessDenied"),
    ("scheduler", "scheduler", "CreateSchedule", {}, 403, "AccessDeniedException"),
    ("execute-api", "apigatewaymanagementapi", "PostToConnection", {}, 403, "AccessDeniedException"),
])
def test_refusals_parse_as_each_service_answers_them(service: str, model: str, operation: str,
                                                     headers: dict, status: int, code: str) -> None:
    got_status, got_headers, body = denied_response(service, headers, "User: x is not authorized")
    assert got_status == status
    error = _parsed_error(model, operation, got_status, got_headers, body)
    assert error["Code"] == code
    assert "not authorized" in error["Message"]


def test_sqs_query_protocol_refusal_is_xml() -> None:
    status, headers, body = denied_response("sqs", {}, "User: a&b is not authorized")
    assert status == 403 and b"<Code>AccessDenied</Code>" in body and b"a&amp;b" in body


# --- Herald's template ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def herald_policies(template_path: Path = REPO / "template.yaml") -> tuple[iam.Policies, Resolver]:
    """The template's policies with the names provisioning would give (as stack.py resolves)."""
    tpl = Template.load(template_path)
    resolver = Resolver(tpl, region=REGION, account_id=ACCOUNT, stack_name="herald")
    aws.register_unprovisioned(resolver, tpl)
    for res in tpl.of_type("AWS::DynamoDB::Table"):
        name = f"herald-{res.logical_id}"
        resolver.refs[res.logical_id] = name
        resolver.attrs[(res.logical_id, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    for res in tpl.of_type("AWS::SQS::Queue"):
        name = f"herald-{res.logical_id}"
        resolver.refs[res.logical_id] = f"http://127.0.0.1:9/{ACCOUNT}/{name}"
        resolver.attrs[(res.logical_id, "Arn")] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        resolver.attrs[(res.logical_id, "QueueName")] = name
    for res in tpl.of_type("AWS::Scheduler::ScheduleGroup"):
        resolver.refs[res.logical_id] = "herald-reminders"
    for res in tpl.of_type("AWS::S3::Bucket"):
        name = f"herald-{res.logical_id}".lower()
        resolver.refs[res.logical_id] = name
        resolver.attrs[(res.logical_id, "Arn")] = f"arn:aws:s3:::{name}"
    return iam.policies_from_template(tpl, resolver), resolver


def decide(policies: iam.Policies, function: str, action: str, resource: str,
           **context: tuple[str, ...]) -> bool:
    role = policies.role_of(function)
    assert role is not None, function
    principal = iam.Principal(role.arn, ACCOUNT)
    ctx = {"aws:principalarn": (role.arn,), "aws:securetransport": ("true",),
           **{k.replace("__", ":"): v for k, v in context.items()}}
    resource_policy = policies.resource_policies.get(resource) \
        or policies.resource_policies.get(iam.bucket_arn(resource) or "", ())
    return iam.evaluate(iam.Request(action, resource, ctx), principal, role.statements,
                        resource_policy).allowed


def connections(method: str) -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{aws.api_id('WebSocketApi')}/prod/{method}/@connections/abc="


def queue(logical_id: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:herald-{logical_id}"


def test_only_the_api_signs_shared_file_urls_and_only_over_tls() -> None:
    """Chat uploads (#32): a presigned URL is authorized against its signer's role, so the API
    role holds s3:PutObject/GetObject on the bucket's objects and no other role does; the
    bucket policy refuses plain HTTP whatever the role."""
    policies, _ = herald_policies()
    obj = "arn:aws:s3:::herald-uploadsbucket/acme/u1/01J-a.png"
    assert decide(policies, "ApiFunction", "s3:PutObject", obj)
    assert decide(policies, "ApiFunction", "s3:GetObject", obj)
    assert not decide(policies, "ApiFunction", "s3:DeleteObject", obj)
    assert not decide(policies, "ApiFunction", "s3:PutObject", "arn:aws:s3:::another-bucket/x")
    assert not decide(policies, "ApiFunction", "s3:GetObject", obj, aws__securetransport=("false",))
    for function in ("WsMessageFunction", "DispatchFunction", "RetryFunction"):
        assert not decide(policies, function, "s3:GetObject", obj), function


def test_presigned_s3_requests_are_classified_by_their_query_credential() -> None:
    query = {"X-Amz-Credential": "AKIAHLTEST/20261206/us-east-1/s3/aws4_request", "X-Amz-Signature": "x"}
    assert credential_of({}, query) == ("AKIAHLTEST", "s3")
    assert credential_of({}, {}) is None
    target = Target(region=REGION, account=ACCOUNT)
    put = classify_aws("s3", "PUT", "/herald-uploadsbucket/acme/u1/01J-a%20b.png", query, {}, b"", target)
    assert [(r.action, r.resource) for r in put] == [("s3:PutObject", "arn:aws:s3:::herald-uploadsbucket/acme/u1/01J-a b.png")]
    get = classify_aws("s3", "GET", "/herald-uploadsbucket/k", query, {}, b"", target)
    assert [r.action for r in get] == ["s3:GetObject"]
    with pytest.raises(Unclassified):
        classify_aws("s3", "GET", "/herald-uploadsbucket", query, {}, b"", target)   # a listing
    # A browser's CORS preflight of the URL: S3 answers it by the bucket's CORS rules alone.
    assert classify_aws("s3", "OPTIONS", "/herald-uploadsbucket/k", query, {}, b"", target) == []


def test_every_herald_function_has_a_role_of_its_own() -> None:
    policies, _ = herald_policies()
    roles = policies.function_roles
    assert len(roles) == 9 and len(set(roles.values())) == 9
    assert not policies.unmodelled


def test_ws_message_may_close_a_connection_and_ws_join_may_not() -> None:
    policies, _ = herald_policies()
    assert decide(policies, "WsMessageFunction", "execute-api:ManageConnections", connections("POST"))
    assert decide(policies, "WsMessageFunction", "execute-api:ManageConnections", connections("DELETE"))
    assert not decide(policies, "WsJoinFunction", "execute-api:ManageConnections", connections("DELETE"))
    assert not decide(policies, "AuthorizerFunction", "execute-api:ManageConnections", connections("POST"))


def test_retry_reads_notifications_only_under_its_prefixes() -> None:
    policies, _ = herald_policies()
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/herald-NotificationsTable"
    assert decide(policies, "RetryFunction", "dynamodb:GetItem", table, dynamodb__leadingkeys=("w#u1",))
    assert decide(policies, "RetryFunction", "dynamodb:GetItem", table, dynamodb__leadingkeys=("k#t1",))
    assert not decide(policies, "RetryFunction", "dynamodb:GetItem", table, dynamodb__leadingkeys=("n#t1",))
    assert not decide(policies, "RetryFunction", "dynamodb:DeleteItem", table, dynamodb__leadingkeys=("k#t1",))


def test_only_herald_sends_to_the_internal_queue() -> None:
    policies, _ = herald_policies()
    fanout = queue("InternalQueue")
    assert decide(policies, "DispatchFunction", "sqs:SendMessage", fanout)
    statements_ = policies.resource_policies[fanout]
    producer = iam.Principal(f"arn:aws:iam::{ACCOUNT}:role/producer", ACCOUNT)
    admin = [iam.Statement.parse({"Effect": "Allow", "Action": "sqs:*", "Resource": "*"})]
    refused = iam.evaluate(iam.Request("sqs:SendMessage", fanout, {"aws:principalarn": (producer.arn,)}),
                           producer, admin, statements_)
    assert not refused.allowed and "OnlyHeraldSendsInternalMessages" in refused.explicit_deny


def test_grants_documented_by_role_sid_and_action() -> None:
    guide = "| `RetryRole` | `PushSubscriptionsReadRemove` | `dynamodb:DeleteItem` | a 404 |\n"
    assert documented(("RetryRole/retry#PushSubscriptionsReadRemove", "dynamodb:DeleteItem", "arn"), guide)
    assert not documented(("RetryRole/retry#PushSubscriptionsReadRemove", "dynamodb:GetItem", "arn"), guide)
    assert not documented(("ApiRole/api#PushSubscriptionsReadRemove", "dynamodb:DeleteItem", "arn"), guide)


def test_summary_lists_refusals_and_unused_grants_of_emulated_services() -> None:
    lines = [
        {"universe": {"api": [["ApiRole/api#A", "sqs:SendMessage", "q"], ["ApiRole/api#B", "dynamodb:GetItem", "t"],
                              ["ApiRole/api", "logs:PutLogEvents", "lg"]]}},
        {"function": "api", "action": "sqs:SendMessage", "resource": "q", "allowed": True,
         "grants": [["ApiRole/api#A", "sqs:SendMessage", "q"]]},
        {"function": "api", "action": "sqs:DeleteMessage", "resource": "q", "allowed": False, "reason": "no"},
    ]
    report = summarize(lines)
    assert report["unused"] == {"api": [("ApiRole/api#B", "dynamodb:GetItem", "t")]}
    assert report["not_emulated"] == {"api": [("ApiRole/api", "logs:PutLogEvents", "lg")]}
    assert report["denied"] == [("api", "sqs:DeleteMessage", "q", "no")]


# --- the stack (fake functions, infra/tests/template.yaml) ----------------------------------

def test_a_post_the_role_does_not_allow_is_refused_and_logged(stack: Stack) -> None:
    """ws-muted's role allows only GET @connections: its post gets API Gateway's 403, the
    stack log names function, action and resource, and the control API lists the refusal."""
    async def body(session: aiohttp.ClientSession) -> None:
        ws = await session.ws_connect(stack.ws_url(token="good", marker="muted"))
        await ws.send_str(json.dumps({"action": "muted", "times": 1}))
        record = await asyncio.to_thread(stack.wait_record, "ws-fire",
                                         lambda r: json.loads(r["event"]["body"]).get("action") == "muted")
        assert record["outcomes"] == ["AccessDeniedException"]
        await ws.close()
    asyncio.run(_session(body))
    line = poll(lambda: next((l for l in stack.log_lines() if "IAM: ws-muted" in l), None), what="the refusal's log line")
    assert "denied execute-api:ManageConnections on arn:aws:execute-api:" in line
    assert "/prod/POST/@connections/" in line and "MutedRole" in line
    status, report, _ = stack.control("GET", "/iam")
    assert status == 200 and report["enforced"] is True
    assert any(d["function"] == "ws-muted" and d["action"] == "execute-api:ManageConnections"
               and d["resource"].endswith("/POST/@connections/{id}") for d in report["denied"])


async def _session(body):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        return await body(session)


def test_a_reminder_that_keeps_failing_ends_in_its_dead_letter_queue(stack: Stack) -> None:
    """Scheduler invokes asynchronously: after the first attempt and MaximumRetryAttempts (1)
    retries, Lambda's invocation record, with the error, goes to the on-failure destination,
    sent with the reminder's own role."""
    scheduler, sqs = stack.client("scheduler"), stack.client("sqs")
    name = f"failing-{uuid.uuid4().hex[:8]}"
    at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    scheduler.create_schedule(
        Name=name, GroupName=stack.info["scheduleGroup"], ScheduleExpression=f"at({at})",
        FlexibleTimeWindow={"Mode": "OFF"}, ActionAfterCompletion="DELETE",
        Target={"Arn": stack.info["functionEnv"]["HERALD_REMINDER_TARGET_ARN"],
                "RoleArn": stack.info["functionEnv"]["HERALD_SCHEDULER_ROLE_ARN"],
                "Input": json.dumps({"fail": name})})
    dlq = stack.info["queues"]["ReminderDeadLetterQueue"]

    def dead_letter() -> dict | None:
        for message in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            record = json.loads(message["Body"])
            if record["requestPayload"] == {"fail": name}:
                return record
        return None

    record = poll(dead_letter, timeout=30, what="the failed reminder in its dead-letter queue")
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["functionArn"].endswith(":function:herald-reminder:$LATEST")
    assert record["responsePayload"]["errorMessage"] == f"reminder failed: {name}"
    assert len([r for r in stack.records("reminder") if r["event"] == {"fail": name}]) == 2
    _, report, _ = stack.control("GET", "/iam")
    assert any(u["function"] == "reminder" and u["action"] == "sqs:SendMessage" for u in report["used"])
    assert any(u["function"] == "scheduler" and u["action"] == "lambda:InvokeFunction" for u in report["used"])


def test_the_internal_dlq_can_be_redriven_without_opening_the_queue() -> None:
    """start-message-move-task sends as its caller: the redrive role may move the internal DLQ's
    messages back, the queue policy lets it through, and it can do nothing else."""
    policies, _ = herald_policies()
    role = next(r for r in policies.roles.values() if r.logical_id == "InternalRedriveRole")
    me = iam.Principal(role.arn, ACCOUNT)

    def may(action: str, resource: str) -> bool:
        request = iam.Request(action, resource, {"aws:principalarn": (role.arn,), "aws:securetransport": ("true",)})
        return iam.evaluate(request, me, role.statements, policies.resource_policies.get(resource, ())).allowed

    dlq, fanout = queue("InternalDeadLetterQueue"), queue("InternalQueue")
    for action in ("sqs:StartMessageMoveTask", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert may(action, dlq), action
    assert may("sqs:SendMessage", fanout)
    assert not may("sqs:SendMessage", queue("DispatchQueue"))
    assert not may("sqs:ReceiveMessage", fanout)
    assert not may("sqs:StartMessageMoveTask", queue("DispatchDeadLetterQueue"))


def test_only_herald_sends_retries_and_escalations() -> None:
    """A retry job names connections and carries a frame; an escalation becomes email or SMS. A
    principal of the account whose own policy allows every SQS call (a producer, say) is still
    refused by the queues' policies; the functions that send them are not."""
    policies, _ = herald_policies()
    anyone = iam.Principal(f"arn:aws:iam::{ACCOUNT}:role/producer", ACCOUNT)
    allow_all = (iam.Statement.parse({"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}),)

    def may(principal: iam.Principal, statements, resource: str) -> bool:
        request = iam.Request("sqs:SendMessage", resource, {"aws:principalarn": (principal.arn,), "aws:securetransport": ("true",)})
        return iam.evaluate(request, principal, statements, policies.resource_policies.get(resource, ())).allowed

    for q in ("RetryQueue", "EscalationQueue"):
        assert not may(anyone, allow_all, queue(q)), q
    assert may(anyone, allow_all, queue("DispatchQueue")), "producers still send notifications"
    for fn in ("DispatchFunction", "WsMessageFunction", "RetryFunction"):
        assert decide(policies, fn, "sqs:SendMessage", queue("RetryQueue")), fn
    assert decide(policies, "DispatchFunction", "sqs:SendMessage", queue("EscalationQueue"))
    redrive = next(r for r in policies.roles.values() if r.logical_id == "EscalationRedriveRole")
    assert may(iam.Principal(redrive.arn, ACCOUNT), redrive.statements, queue("EscalationQueue"))
    assert not may(iam.Principal(redrive.arn, ACCOUNT), redrive.statements, queue("RetryQueue"))


def test_a_failed_reminder_goes_to_an_alarmed_dlq_with_the_reminders_role() -> None:
    policies, _ = herald_policies()
    tpl = Template.load(REPO / "template.yaml")
    config = tpl.resources["ReminderFunction"].properties["EventInvokeConfig"]
    assert config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS", "Destination": {"Fn::GetAtt": ["ReminderDeadLetterQueue", "Arn"]}}
    assert decide(policies, "ReminderFunction", "sqs:SendMessage", queue("ReminderDeadLetterQueue"))
    alarm = tpl.resources["ReminderDlqDepthAlarm"].properties
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["ReminderDeadLetterQueue", "QueueName"]}


def test_no_role_keeps_a_grant_no_code_path_needs() -> None:
    """The grants #29 found over-broad, which no SDK call of the functions uses: gone for good."""
    policies, _ = herald_policies()
    connections_table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/herald-ConnectionsTable"
    notifications = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/herald-NotificationsTable"
    schedule = f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/herald-reminders/r"
    for function in policies.function_roles:
        for table in (connections_table, notifications):
            assert not decide(policies, function, "dynamodb:ConditionCheckItem", table), function
            assert not decide(policies, function, "dynamodb:Scan", table), function
        assert not decide(policies, function, "dynamodb:PutItem", connections_table), function
        assert not decide(policies, function, "dynamodb:BatchGetItem", connections_table), function
        assert not decide(policies, function, "scheduler:GetSchedule", schedule), function
        if function != "DispatchFunction":   # presence's settle is dispatch's alone
            assert not decide(policies, function, "dynamodb:DeleteItem", connections_table), function
    reminder = {a for a in ("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")
                if decide(policies, "ReminderFunction", f"dynamodb:{a}", notifications)}
    assert reminder == {"GetItem", "UpdateItem"}
    assert not decide(policies, "RetryFunction", "sqs:ChangeMessageVisibility", queue("RetryQueue"))
    # Still there: what the code does call (dispatch and retry close connections that missed a frame).
    assert decide(policies, "DispatchFunction", "execute-api:ManageConnections", connections("DELETE"))
    assert decide(policies, "RetryFunction", "execute-api:ManageConnections", connections("DELETE"))
    assert decide(policies, "DispatchFunction", "sqs:ChangeMessageVisibility", queue("InternalQueue"))


def test_remembered_decisions_still_honour_the_conditions() -> None:
    """Access remembers decisions (every call of every function is decided), keyed by the
    condition keys the policies test: retry's GetItem under w# must not let n# through."""
    from herald_local.access import Access, Identity, access_key_for

    policies, _ = herald_policies()
    access = Access(policies)
    retry = Identity("retry", "RetryFunction", "herald-retry", access_key_for("retry"), "s",
                     policies.role_of("RetryFunction"))
    access.add(retry)
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/herald-NotificationsTable"

    def get(key: str) -> bool:
        return access.decide(retry, iam.Request("dynamodb:GetItem", table, {"dynamodb:leadingkeys": (key,)})).allowed

    assert [get("w#a"), get("n#a"), get("w#b"), get("n#b")] == [True, False, True, False]
    report = access.report()
    assert [d["action"] for d in report["denied"]] == ["dynamodb:GetItem"]
    assert any(u["grants"] == [["RetryRole/retry#PushSubscriptionsReadRemove", "dynamodb:GetItem", table]]
               for u in report["used"])
