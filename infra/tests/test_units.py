"""Pure pieces: authorizer policy evaluation, route selection, HTTP route matching, faults,
schedule expressions, tokens."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from herald_local.faults import Faults
from herald_local.functions import FunctionSpec
from herald_local.httpapi import HttpApi, HttpRoute
from herald_local.runtime import FairQueue, Invocation
from herald_local.scheduler import due_time
from herald_local.herald import TokenIssuer
from herald_local.wsapi import AuthorizerVerdict, Route, WebSocketApi, authorizer_context

ARN = "arn:aws:execute-api:us-east-1:123456789012:abc/prod/$connect"


def policy(effect: str, resource: str | list[str], action: str = "execute-api:Invoke") -> dict:
    return {"principalId": "u1", "context": {"user": "u1", "n": 1, "ok": True},
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": action, "Effect": effect, "Resource": resource}]}}


def test_allow_policy_gives_flat_context() -> None:
    ctx = authorizer_context(policy("Allow", [ARN]), ARN)
    assert ctx == {"user": "u1", "n": 1, "ok": True, "principalId": "u1"}
    assert authorizer_context(policy("Allow", "arn:aws:execute-api:*:*:abc/*"), ARN)


@pytest.mark.parametrize("response, status", [
    (policy("Deny", [ARN]), 403),
    (policy("Allow", "arn:aws:execute-api:us-east-1:123456789012:other/*"), 403),
    (policy("Allow", [ARN], action="lambda:Invoke"), 403),
    ({"principalId": "u1"}, 500),
    ({**policy("Allow", [ARN]), "context": {"roles": ["a"]}}, 500),
])
def test_refusals(response: dict, status: int) -> None:
    with pytest.raises(AuthorizerVerdict) as verdict:
        authorizer_context(response, ARN)
    assert verdict.value.status == status


def test_explicit_deny_wins() -> None:
    doc = policy("Allow", "*")
    doc["policyDocument"]["Statement"].append({"Action": "*", "Effect": "Deny", "Resource": ARN})
    with pytest.raises(AuthorizerVerdict):
        authorizer_context(doc, ARN)


def _spec(name: str) -> FunctionSpec:
    return FunctionSpec(logical_id=name, name=name, arn=f"arn:aws:lambda:r:1:function:{name}",
                        binary=name, command=["true"], env={}, timeout_s=3, memory_mb=128)


def test_route_selection() -> None:
    api = WebSocketApi(api_id="a", stage="prod", selection_path=["action"], routes={
        "join": Route("join", _spec("join")), "$default": Route("$default", _spec("default"))})
    assert api.select_route('{"action": "join"}').key == "join"
    assert api.select_route('{"action": "other"}').key == "$default"
    assert api.select_route('{"action": 3}').key == "$default"
    assert api.select_route("not json").key == "$default"
    assert api.select_route(None).key == "$default"
    del api.routes["$default"]
    assert api.select_route("{}") is None


def test_http_route_precedence() -> None:
    fn = _spec("api")
    api = HttpApi([HttpRoute("GET", "/items/{id}", fn), HttpRoute("GET", "/items/special", fn),
                   HttpRoute("ANY", "/items/special", fn), HttpRoute("ANY", "/{proxy+}", fn),
                   HttpRoute("ANY", "$default", fn)], {}, api_id="x", account_id="1")
    route, params = api.select("GET", "/items/special")
    assert (route.method, route.path, params) == ("GET", "/items/special", {})
    route, params = api.select("GET", "/items/7")
    assert (route.path, params) == ("/items/{id}", {"id": "7"})
    route, params = api.select("POST", "/items/7/x")
    assert (route.path, params) == ("/{proxy+}", {"proxy": "items/7/x"})
    assert api.select("POST", "/")[0].key == "$default"


def test_counted_and_rate_post_faults() -> None:
    faults = Faults(rng=random.Random(1))
    assert faults.post_status("c1") is None
    faults.add_post_fault(429, connection_ids=["c1"], count=2)
    assert faults.post_status("c2") is None
    assert [faults.post_status("c1") for _ in range(3)] == [429, 429, None]
    faults.add_post_fault(500, rate=1.0)
    assert faults.post_status("c2") == 500
    faults.clear()
    assert faults.post_status("c2") is None
    with pytest.raises(ValueError):
        faults.add_post_fault(200)


def test_kill_faults_match_name_and_text() -> None:
    faults = Faults()
    faults.add_kill_fault("dispatch", "boom", count=1)
    assert faults.kill_delay(("retry",), b"boom") is None
    assert faults.kill_delay(("dispatch",), b"calm") is None
    assert faults.kill_delay(("dispatch", "DispatchFunction"), b"..boom..") == 0
    assert faults.kill_delay(("dispatch",), b"boom") is None


def test_rate_faults_count_what_they_inject() -> None:
    faults = Faults(random.Random(7))
    faults.add_kill_fault("dispatch", rate=1.0, after_ms=500)
    delay = faults.kill_delay(("dispatch",), b"{}")
    assert delay is not None and 0 <= delay <= 0.5
    faults.add_redeliver_fault("dispatch", rate=1.0)
    assert faults.should_redeliver(("dispatch",)) and not faults.should_redeliver(("retry",))
    faults.add_aws_fault("BatchWriteItem", match="Log", status=400,
                         error_type="ProvisionedThroughputExceededException")
    fault = faults.aws_fault("DynamoDB_20120810.BatchWriteItem", b'{"herald-LogTable": []}')
    assert fault is not None and fault.status == 400
    assert faults.aws_fault("DynamoDB_20120810.BatchWriteItem", b'{"other": []}') is None
    assert faults.aws_fault("DynamoDB_20120810.Query", b"Log") is None
    assert faults.counts == {"kill": 1, "redelivery": 1, "aws:BatchWriteItem:400": 1}
    with pytest.raises(ValueError):
        faults.add_aws_fault("PutItem")  # neither an error nor a delay
    faults.add_kill_fault("dispatch", rate=0.0)
    faults.clear()
    assert faults.kill_delay(("dispatch",), b"{}") is None and not faults.aws


def test_at_expressions() -> None:
    assert due_time("at(2026-11-23T10:00:00)", None) == dt.datetime(2026, 11, 23, 10, tzinfo=dt.timezone.utc)
    paris = due_time("at(2026-11-23T10:00:00)", "Europe/Paris")
    assert paris is not None and paris.astimezone(dt.timezone.utc).hour == 9
    assert due_time("rate(5 minutes)", None) is None


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_tokens_verify_with_published_keys() -> None:
    issuer = TokenIssuer(tenant_claim="org")
    token = issuer.issue("u1", "acme", roles=["admin"], groups=["course:42"], ttl_s=60)
    head, body, sig = token.split(".")
    header, claims = json.loads(_b64decode(head)), json.loads(_b64decode(body))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": "local-1"}
    assert claims["org"] == "acme" and claims["sub"] == "u1" and claims["groups"] == ["course:42"]
    assert claims["iss"] == "herald-local" and claims["aud"] == "herald"
    assert claims["exp"] - claims["iat"] == 60
    jwk = issuer.jwks["keys"][0]
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(_b64decode(jwk["x"]), "big"),
                                        int.from_bytes(_b64decode(jwk["y"]), "big"),
                                        ec.SECP256R1()).public_key()
    raw = _b64decode(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if invalid

    hs = issuer.issue("u1", "acme", alg="HS256")
    head, body, sig = hs.split(".")
    expected = hmac.new(issuer.hs256_secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert _b64decode(sig) == expected
    env = issuer.function_env()
    assert json.loads(env["HERALD_JWT_JWKS"]) == issuer.jwks and env["HERALD_JWT_JWKS_URL"] == ""


# --- SigV4 on @connections ------------------------------------------------------------------

SIGNING_CREDS = {"aws_access_key_id": "herald", "aws_secret_access_key": "herald-local"}
SIGNED_URL = "http://127.0.0.1:4510/local/@connections/L0SM9cOFvHcCIhw%3D"
SIGNED_AT = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.timezone.utc)


def signed(method: str = "POST", body: bytes = b'{"n":1}', creds: dict[str, str] | None = None,
           region: str = "us-east-1", service: str = "execute-api",
           at: dt.datetime = SIGNED_AT) -> dict[str, str]:
    """Headers botocore's signer (what the boto3 management client uses) puts on a request."""
    from unittest import mock

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = creds or SIGNING_CREDS
    request = AWSRequest(method=method, url=SIGNED_URL, data=body)
    with mock.patch("botocore.auth.get_current_datetime", return_value=at.replace(tzinfo=None)):
        SigV4Auth(Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"],
                              creds.get("aws_session_token")), service, region).add_auth(request)
    return {"Host": "127.0.0.1:4510", **dict(request.headers)}


def verdict(headers: dict[str, str], method: str = "POST", body: bytes = b'{"n":1}',
            url: str = SIGNED_URL, creds: dict[str, str] | None = None,
            now: dt.datetime = SIGNED_AT) -> str | None:
    from herald_local.sigv4 import Verifier

    refusal = Verifier(creds or SIGNING_CREDS, "us-east-1").check(method, url, headers, body, now=now)
    return None if refusal is None else refusal.error_type


def test_sigv4_accepts_a_correctly_signed_request() -> None:
    assert verdict(signed()) is None
    assert verdict(signed("DELETE", b""), "DELETE", b"") is None
    assert verdict(signed(), now=SIGNED_AT + dt.timedelta(minutes=4)) is None
    session = {**SIGNING_CREDS, "aws_session_token": "tok"}
    assert verdict(signed(creds=session), creds=session) is None


def test_sigv4_computes_botocores_signature_for_every_shape_of_request() -> None:
    """sigv4.py computes the signature itself (botocore's signer cost ~130 µs a post); it must be
    botocore's for paths with encoded and dot segments, query strings, default ports, spaces in
    header values, blacklisted and content-hash headers, empty and non-empty bodies."""
    from botocore.auth import SigV4Auth, _host_from_url
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from herald_local.sigv4 import Verifier

    creds = Credentials(SIGNING_CREDS["aws_access_key_id"], SIGNING_CREDS["aws_secret_access_key"])
    verifier = Verifier(SIGNING_CREDS, "us-east-1")
    cases = [
        ("POST", "http://127.0.0.1:43539/prod/@connections/RUQLhFSKPgx0qQM%3D", b'{"a":1}', {}),
        ("GET", "http://127.0.0.1:43539/prod/@connections/abc%2Bdef=", b"", {}),
        ("DELETE", "http://localhost:80/st%20age/@connections/a/../b?z=1&a=2&a=1", b"", {"X-Custom": "  a   b  "}),
        ("POST", "http://127.0.0.1:1/prod/@connections/x", b"data",
         {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "User-Agent": "ua", "X-Amzn-Trace-Id": "Root=1"}),
        ("POST", "http://127.0.0.1:1/prod/@connections/ü~x", "ünï".encode(), {"Content-Type": "text/plain"}),
    ]
    for method, url, body, extra in cases:
        request = AWSRequest(method=method, url=url, data=body, headers=dict(extra))
        SigV4Auth(creds, "execute-api", "us-east-1").add_auth(request)
        headers = {**dict(request.headers.items()), "Host": _host_from_url(url)}
        now = dt.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        assert verifier.check(method, url, headers, body, now=now) is None, (method, url)
        assert verifier.check(method, url, headers, body + b"x", now=now) is not None or \
            "X-Amz-Content-SHA256" in extra, (method, url)


def test_sigv4_refuses_everything_else() -> None:
    good = signed()
    assert verdict({"Host": "127.0.0.1:4510"}) == "MissingAuthenticationTokenException"
    assert verdict({**good, "Authorization": "Bearer abc"}) == "IncompleteSignatureException"
    assert verdict(signed(creds={"aws_access_key_id": "x", "aws_secret_access_key": "x"})) \
        == "UnrecognizedClientException"
    wrong_secret = {"aws_access_key_id": "herald", "aws_secret_access_key": "guess"}
    assert verdict(signed(creds=wrong_secret)) == "InvalidSignatureException"
    assert verdict(signed(region="eu-west-1")) == "InvalidSignatureException"
    assert verdict(signed(service="execute-apix")) == "InvalidSignatureException"
    # What was signed must be what arrives: body, path and method.
    assert verdict(good, body=b'{"n":2}') == "InvalidSignatureException"
    assert verdict(good, url=SIGNED_URL.replace("L0SM", "X0SM")) == "InvalidSignatureException"
    assert verdict(good, method="DELETE") == "InvalidSignatureException"
    assert verdict({**good, "X-Amz-Date": "20261123T100001Z"}) == "InvalidSignatureException"
    # Replays outside the clock-skew window, and session credentials without their token.
    assert verdict(good, now=SIGNED_AT + dt.timedelta(minutes=6)) == "InvalidSignatureException"
    session = {**SIGNING_CREDS, "aws_session_token": "tok"}
    assert verdict(good, creds=session) == "UnrecognizedClientException"


def test_fair_queue_takes_sources_round_robin() -> None:
    """One connection's backlog does not queue another connection's invocation behind it."""
    def inv(name: str, source: str | None) -> Invocation:
        return Invocation(name, b"", None, source)  # type: ignore[arg-type]

    q = FairQueue()
    for i in range(3):
        q.append(inv(f"flood{i}", "a"))
    q.append(inv("calm", "b"))
    q.append(inv("sqs", None))
    assert [i.request_id for i in q] == ["flood0", "flood1", "flood2", "calm", "sqs"]
    taken = []
    while q:
        taken.append(q.popleft().request_id)
    assert taken == ["flood0", "calm", "sqs", "flood1", "flood2"]


def test_fake_log_reader_leaves_a_line_still_being_written() -> None:
    from conftest import complete_records

    text = '{"mode": "a", "n": 1}\n{"mode": "b", "n": 2}\n{"mode": "c", "bo'
    assert complete_records(text) == [{"mode": "a", "n": 1}, {"mode": "b", "n": 2}]
    assert complete_records("") == []
