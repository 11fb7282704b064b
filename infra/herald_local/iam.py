"""IAM policy evaluation, as AWS decides one request of one principal in one account.

Pure: no I/O, no stack. `Policy` holds statements (identity-based: a role's, or resource-based: a
queue policy's, with its `Principal`); `evaluate` decides a `Request` the way AWS's evaluation
logic does within one account: an explicit Deny in any policy wins, else an Allow in the
principal's policies or in the resource's policy allows, else it is an implicit deny.

What is modelled: Action/NotAction and Resource/NotResource with `*` and `?` wildcards (actions
case-insensitive, resources case-sensitive), Principal/NotPrincipal in resource policies, and
the condition operators a serverless template uses (String*, Arn*, Bool, Null, with
`ForAllValues:`/`ForAnyValue:` and `...IfExists`). Permissions boundaries, SCPs, session
policies and policy variables are not; a condition operator that is not modelled makes its
statement never match (an Allow then grants nothing, so a gap shows up as a refusal locally
rather than as a false grant).

`policies_from_template` reads a template's roles, the functions that assume them, and its SQS
queue policies, resolving `!Sub`/`!GetAtt`/`!Ref` to the local names and ARNs.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

from .template import Resolver, Template, Unresolved

ALLOW, DENY = "Allow", "Deny"


@lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (also `/` and `:`), `?` one character."""
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0)


def matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == value.lower() if ignore_case else pattern == value
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (operator, key, values)
    # Resource policies only: who the statement is about. None in identity policies.
    principals: tuple[str, ...] | None = None
    not_principals: tuple[str, ...] | None = None
    sid: str = ""
    origin: str = ""   # where it comes from, for logs and the grant report: "Role/policy#Sid"

    @classmethod
    def parse(cls, doc: dict[str, Any], origin: str = "", resource_policy: bool = False) -> "Statement":
        effect = doc.get("Effect")
        if effect not in (ALLOW, DENY):
            raise ValueError(f"{origin}: Effect must be Allow or Deny, not {effect!r}")
        conditions = []
        for operator, block in (doc.get("Condition") or {}).items():
            for key, values in (block or {}).items():
                conditions.append((str(operator), str(key), _strings(values)))
        principals = not_principals = None
        if resource_policy:
            principals = _principals(doc.get("Principal")) if "Principal" in doc else None
            not_principals = _principals(doc.get("NotPrincipal")) if "NotPrincipal" in doc else None
            if principals is None and not_principals is None:
                raise ValueError(f"{origin}: a resource policy statement needs a Principal")
        sid = str(doc.get("Sid") or "")
        return cls(effect=effect, actions=_strings(doc.get("Action")),
                   not_actions=_strings(doc.get("NotAction")),
                   resources=_strings(doc.get("Resource")),
                   not_resources=_strings(doc.get("NotResource")),
                   conditions=tuple(conditions), principals=principals,
                   not_principals=not_principals, sid=sid,
                   origin=f"{origin}#{sid}" if sid else origin)

    # --- matching ---------------------------------------------------------------------

    def action_patterns(self, action: str) -> list[str]:
        """The Action patterns that cover `action` (for NotAction: ["NotAction"] if it is not
        excluded)."""
        if self.not_actions:
            return [] if any(matches(p, action, ignore_case=True) for p in self.not_actions) \
                else ["NotAction"]
        return [p for p in self.actions if matches(p, action, ignore_case=True)]

    def resource_patterns(self, resource: str) -> list[str]:
        if self.not_resources:
            return [] if any(matches(p, resource) for p in self.not_resources) else ["NotResource"]
        return [p for p in self.resources if matches(p, resource)]

    def about(self, principal: "Principal") -> bool:
        """Whether a resource policy statement applies to `principal`."""
        if self.not_principals is not None:
            return not any(principal.is_named_by(p) for p in self.not_principals)
        return any(principal.is_named_by(p) for p in self.principals or ())

    def conditions_hold(self, context: dict[str, tuple[str, ...]]) -> bool:
        return all(condition_holds(op, key, values, context) for op, key, values in self.conditions)


def _principals(value: Any) -> tuple[str, ...]:
    """A Principal element as strings: "*", ARNs/account ids (AWS) and "service:NAME"."""
    if value == "*":
        return ("*",)
    out: list[str] = []
    for kind, names in (value or {}).items():
        for name in _strings(names):
            out.append(f"service:{name}" if kind == "Service" else name)
    return tuple(out)


@dataclass(frozen=True)
class Principal:
    arn: str            # arn:aws:iam::ACCOUNT:role/NAME
    account: str

    def is_named_by(self, name: str) -> bool:
        if name in ("*", self.arn, self.account, f"arn:aws:iam::{self.account}:root"):
            return True
        return False


# --- conditions -------------------------------------------------------------------------

def _string_equals(value: str, pattern: str) -> bool:
    return value == pattern


def _string_equals_ic(value: str, pattern: str) -> bool:
    return value.lower() == pattern.lower()


def _string_like(value: str, pattern: str) -> bool:
    return matches(pattern, value)


def _bool(value: str, pattern: str) -> bool:
    return value.lower() == pattern.lower()


# operator -> (match one value against one pattern, negated)
_OPERATORS = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringEqualsIgnoreCase": (_string_equals_ic, False),
    "StringNotEqualsIgnoreCase": (_string_equals_ic, True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "ArnEquals": (_string_like, False),   # IAM treats ArnEquals like ArnLike
    "ArnLike": (_string_like, False),
    "ArnNotEquals": (_string_like, True),
    "ArnNotLike": (_string_like, True),
    "Bool": (_bool, False),
}


def condition_holds(operator: str, key: str, patterns: tuple[str, ...],
                    context: dict[str, tuple[str, ...]]) -> bool:
    """One condition (operator, key, values) against the request context (keys lower-case)."""
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    if if_exists:
        op = op[: -len("IfExists")]
    values = context.get(key.lower())
    if op == "Null":
        return (values is None or len(values) == 0) == (patterns[0].lower() == "true")
    if op not in _OPERATORS:
        return False   # not modelled: see the module's docstring
    match, negated = _OPERATORS[op]

    def one(value: str) -> bool:
        hit = any(match(value, p) for p in patterns)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in values or ())   # true for an empty or missing key
    if qualifier == "ForAnyValue":
        return any(one(v) for v in values or ())
    if not values:
        # A missing key: "...IfExists" and the negated operators hold, the others do not.
        return if_exists or negated
    return any(one(v) for v in values)


# --- evaluation -------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    action: str                     # "dynamodb:PutItem"
    resource: str                   # an ARN
    context: dict[str, tuple[str, ...]] = field(default_factory=dict)  # lower-case keys


@dataclass(frozen=True)
class Grant:
    """One (action pattern, resource pattern) of one Allow statement: what the report counts."""
    origin: str
    action: str
    resource: str


@dataclass
class Decision:
    allowed: bool
    explicit_deny: str = ""          # the origin of the Deny that refused it
    grants: list[Grant] = field(default_factory=list)   # the Allow grants that cover it

    def reason(self, request: Request) -> str:
        if self.allowed:
            return "allowed by " + ", ".join(sorted({g.origin for g in self.grants}))
        if self.explicit_deny:
            return f"with an explicit deny in {self.explicit_deny}"
        return f"because no identity-based policy allows the {request.action} action"


def evaluate(request: Request, principal: Principal, identity: Iterable[Statement],
             resource_policy: Iterable[Statement] = ()) -> Decision:
    decision = Decision(allowed=False)
    deny = ""
    for statement, is_resource in [*((s, False) for s in identity),
                                   *((s, True) for s in resource_policy)]:
        if is_resource and not statement.about(principal):
            continue
        actions = statement.action_patterns(request.action)
        if not actions:
            continue
        resources = statement.resource_patterns(request.resource)
        if not resources or not statement.conditions_hold(request.context):
            continue
        if statement.effect == DENY:
            deny = deny or statement.origin
        else:
            decision.grants += [Grant(statement.origin, a, r) for a in actions for r in resources]
    if deny:
        return Decision(allowed=False, explicit_deny=deny)
    decision.allowed = bool(decision.grants)
    return decision


# --- policies of a template -------------------------------------------------------------

@dataclass
class Role:
    logical_id: str
    arn: str
    statements: list[Statement]
    services: tuple[str, ...] = ()   # services its trust policy lets assume it, but Lambda

    def grants(self) -> list[Grant]:
        """Every (action, resource) pair its Allow statements grant, for the grant report."""
        return [Grant(s.origin, a, r) for s in self.statements if s.effect == ALLOW
                for a in (s.actions or ("NotAction",)) for r in (s.resources or ("NotResource",))]


@dataclass
class Policies:
    roles: dict[str, Role]                    # role ARN -> role
    function_roles: dict[str, str]            # function logical id -> role ARN
    resource_policies: dict[str, list[Statement]]   # resource ARN -> statements
    unmodelled: list[str] = field(default_factory=list)   # what the evaluator cannot see

    def role_of(self, function_logical_id: str) -> Role | None:
        arn = self.function_roles.get(function_logical_id)
        return self.roles.get(arn) if arn else None


def _statements(document: Any, origin: str, resource_policy: bool = False) -> list[Statement]:
    raw = (document or {}).get("Statement") or []
    if isinstance(raw, dict):
        raw = [raw]
    return [Statement.parse(s, origin, resource_policy) for s in raw]


def policies_from_template(template: Template, resolver: Resolver) -> Policies:
    """Every role with its inline policies and the managed policies of the template attached to
    it, which role each function assumes, and the SQS queue policies. `resolver` must know the
    provisioned resources (tables, queues) and the unprovisioned ones (roles, APIs)."""
    roles: dict[str, Role] = {}
    by_logical_id: dict[str, Role] = {}
    unmodelled: list[str] = []
    for res in template.of_type("AWS::IAM::Role"):
        if not resolver.included(res):
            continue
        props = resolver.resolve(res.properties)
        statements = []
        for policy in props.get("Policies") or []:
            name = f"{res.logical_id}/{policy.get('PolicyName', '')}"
            statements += _statements(policy.get("PolicyDocument"), name)
        for arn in props.get("ManagedPolicyArns") or []:
            unmodelled.append(f"{res.logical_id}: managed policy {arn} (its statements are not known locally)")
        trusted = [p for s in _statements(props.get("AssumeRolePolicyDocument"), res.logical_id,
                                          resource_policy=True) for p in s.principals or ()]
        services = tuple(p.removeprefix("service:") for p in trusted
                         if p.startswith("service:") and p != "service:lambda.amazonaws.com")
        role = Role(res.logical_id, resolver.attrs[(res.logical_id, "Arn")], statements, services)
        roles[role.arn] = by_logical_id[res.logical_id] = role
    for res in template.of_type("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        if not resolver.included(res):
            continue
        props = resolver.resolve(res.properties)
        for name in props.get("Roles") or []:
            role = next((r for r in roles.values() if r.arn.endswith(f":role/{name}")), None)
            if role is not None:
                role.statements += _statements(props.get("PolicyDocument"), res.logical_id)
    function_roles = {}
    for res in template.of_type("AWS::Serverless::Function", "AWS::Lambda::Function"):
        if not resolver.included(res):
            continue
        try:
            role_arn = resolver.resolve(res.properties.get("Role"))
        except Unresolved:
            role_arn = None
        if role_arn:
            function_roles[res.logical_id] = str(role_arn)
        elif res.properties.get("Policies"):
            unmodelled.append(f"{res.logical_id}: SAM Policies without a Role (not enforced locally)")
    resource_policies: dict[str, list[Statement]] = {}
    queue_arns = {url: arn for (lid, attr), arn in resolver.attrs.items() if attr == "Arn"
                  for url in [resolver.refs.get(lid)] if isinstance(url, str) and url.startswith("http")}
    for res in template.of_type("AWS::SQS::QueuePolicy"):
        if not resolver.included(res):
            continue
        props = resolver.resolve(res.properties)
        statements = _statements(props.get("PolicyDocument"), res.logical_id, resource_policy=True)
        for url in props.get("Queues") or []:
            arn = queue_arns.get(str(url))
            if arn is not None:
                resource_policies.setdefault(arn, []).extend(statements)
    for res in template.of_type("AWS::S3::BucketPolicy"):
        # Kept under the bucket's ARN; an object's request is decided with its bucket's policy
        # (`bucket_arn`), whose statements name the objects by pattern.
        if not resolver.included(res):
            continue
        props = resolver.resolve(res.properties)
        statements = _statements(props.get("PolicyDocument"), res.logical_id, resource_policy=True)
        resource_policies.setdefault(f"arn:aws:s3:::{props.get('Bucket')}", []).extend(statements)
    return Policies(roles, function_roles, resource_policies, unmodelled)


def bucket_arn(resource: str) -> str | None:
    """The bucket of an S3 object ARN (`arn:aws:s3:::bucket/key` -> `arn:aws:s3:::bucket`)."""
    if not resource.startswith("arn:aws:s3:::") or "/" not in resource:
        return None
    return resource.split("/", 1)[0]
