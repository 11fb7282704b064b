"""template.py: tags, intrinsics, Globals; and Herald's own template.yaml against the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald_local.aws import register_unprovisioned
from herald_local.functions import FunctionIndex, load_functions
from herald_local.template import Resolver, Template, TemplateError, Unresolved, merge_globals
from herald_local.wsapi import WebSocketApi

REPO = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, text: str) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return Template.load(path)


TEMPLATE = """
Parameters:
  Stage: {Type: String, Default: prod}
  Names: {Type: CommaDelimitedList, Default: "a,b"}
  Size: {Type: Number, Default: 3}
Mappings:
  Sizes: {prod: {mem: "1024"}}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Not [!Condition IsProd]
  Both: !And [!Condition IsProd, !Equals ["1", "1"]]
Globals:
  Function:
    Timeout: 5
    Environment: {Variables: {A: global, B: global}}
    Layers: [l1]
Resources:
  Queue: {Type: AWS::SQS::Queue}
  Dev: {Type: AWS::SQS::Queue, Condition: IsDev}
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: fn}}
    Properties:
      Layers: [l2]
      Environment: {Variables: {B: own}}
"""


def test_short_tags_and_intrinsics(tmp_path: Path) -> None:
    tpl = load(tmp_path, TEMPLATE)
    r = Resolver(tpl, region="us-east-1", account_id="123456789012")
    r.refs["Queue"] = "https://q"
    r.attrs[("Queue", "Arn")] = "arn:aws:sqs:us-east-1:123456789012:q"
    assert r.resolve({"Fn::Sub": "${AWS::Region}/${Stage}/${Queue}/${Queue.Arn}/${!Literal}"}) == \
        "us-east-1/prod/https://q/arn:aws:sqs:us-east-1:123456789012:q/${Literal}"
    assert r.resolve({"Fn::Sub": ["${X}-${Stage}", {"X": {"Ref": "Size"}}]}) == "3-prod"
    assert r.resolve({"Fn::Join": ["|", {"Ref": "Names"}]}) == "a|b"
    assert r.resolve({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}) == "y"
    assert r.resolve({"Fn::If": ["IsProd", "p", "d"]}) == "p"
    assert r.resolve({"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "mem"]}) == "1024"
    assert r.resolve({"Fn::GetAZs": ""}) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert r.resolve({"Fn::Base64": "hi"}) == "aGk="
    assert r.condition("Both") and not r.condition("IsDev")
    assert not r.included(tpl.resources["Dev"])


def test_no_value_removes_keys_and_items(tmp_path: Path) -> None:
    r = Resolver(load(tmp_path, TEMPLATE), region="us-east-1", account_id="1")
    value = {"keep": 1, "drop": {"Fn::If": ["IsDev", "x", {"Ref": "AWS::NoValue"}]},
             "list": ["a", {"Ref": "AWS::NoValue"}]}
    assert r.resolve(value) == {"keep": 1, "list": ["a"]}


def test_unresolved_and_unknown_references(tmp_path: Path) -> None:
    r = Resolver(load(tmp_path, TEMPLATE), region="us-east-1", account_id="1")
    with pytest.raises(Unresolved):
        r.resolve({"Ref": "Queue"})
    with pytest.raises(Unresolved):
        r.resolve({"Fn::GetAtt": ["Queue", "Arn"]})
    with pytest.raises(TemplateError):
        r.resolve({"Ref": "Nope"})
    with pytest.raises(TemplateError):
        r.resolve({"Fn::ImportValue": "x"})


def test_sam_globals_merge(tmp_path: Path) -> None:
    props = load(tmp_path, TEMPLATE).resources["Fn"].properties
    assert props["Timeout"] == 5
    assert props["Environment"]["Variables"] == {"A": "global", "B": "own"}
    assert props["Layers"] == ["l1", "l2"]
    assert merge_globals({"a": 1}, {"a": 2}) == {"a": 2}


def test_parameter_without_default_is_an_error(tmp_path: Path) -> None:
    tpl = load(tmp_path, "Parameters: {P: {Type: String}}\nResources: {}\n")
    with pytest.raises(TemplateError):
        Resolver(tpl, region="us-east-1", account_id="1")


def _resolved(path: Path) -> tuple[Template, Resolver]:
    """A template resolved as if provisioned: resources named `local-<LogicalId>`."""
    tpl = Template.load(path)
    r = Resolver(tpl, region="us-east-1", account_id="123456789012")
    register_unprovisioned(r, tpl)
    for res in tpl.of_type("AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::Scheduler::ScheduleGroup", "AWS::S3::Bucket"):
        r.refs[res.logical_id] = f"local-{res.logical_id}"
        for attr in ("Arn", "QueueName", "StreamArn"):
            r.attrs[(res.logical_id, attr)] = f"arn:aws:local:{res.logical_id}:{attr}"
    return tpl, r


@pytest.mark.skipif(not (REPO / "template.yaml").exists(), reason="no template.yaml yet")
def test_herald_template_matches_the_runtime_contract() -> None:
    """The real template resolves locally: every function of runtime-contract.md, its
    environment, and the WebSocket routes the gateway serves."""
    tpl, r = _resolved(REPO / "template.yaml")
    specs = load_functions(tpl, r, profile="debug", binary_dir=None, commands={},
                           env_overrides={}, base_env={})
    assert {s.key for s in specs} == {
        "authorizer", "ws-connect", "ws-disconnect", "ws-join", "ws-message", "dispatch",
        "retry", "reminder", "api"}
    # Only the two functions that verify tokens get the JWT settings and the HS256 secret.
    assert {s.key for s in specs if "HERALD_JWT_HS256_SECRET" in s.env} == {"authorizer", "api"}
    assert {s.key for s in specs if "HERALD_JWT_ISSUER" in s.env} == {"authorizer", "api"}
    # One binary serves the nine functions; each knows which it is by its Handler (_HANDLER).
    assert {s.binary for s in specs} == {"herald"}
    assert {s.handler for s in specs} == {s.key for s in specs}
    for spec in specs:
        assert spec.env["HERALD_CONNECTIONS_TABLE"] == "local-ConnectionsTable"
        assert spec.env["HERALD_DISPATCH_QUEUE_URL"] == "local-DispatchQueue"
    index = FunctionIndex(specs)
    reminder = index.get(specs[0].env["HERALD_REMINDER_TARGET_ARN"])
    assert reminder is not None and reminder.key == "reminder"
    api = WebSocketApi.from_template(tpl, r, index)
    assert api is not None and api.selection_path == ["action"]
    routes = api.routes
    assert routes["$connect"].authorizer is not None
    assert routes["$connect"].function.key == "ws-connect"
    assert routes["$disconnect"].function.key == "ws-disconnect"
    assert routes["join"].two_way and routes["leave"].two_way and routes["$default"].two_way
    assert routes["$default"].function.key == "ws-message"


def test_binary_commands(tmp_path: Path) -> None:
    """target/<profile>/<Binary> by default; --binary-dir and --binary override it."""
    tpl, r = _resolved(Path(__file__).parent / "template.yaml")

    def commands(binary_dir: str | None = None, overrides: dict[str, str] | None = None
                 ) -> dict[str, list[str]]:
        specs = load_functions(tpl, r, profile="release", binary_dir=binary_dir,
                               commands=overrides or {}, env_overrides={}, base_env={})
        return {s.key: s.command for s in specs}

    assert commands()["dispatch"] == [str(tpl.directory / "target" / "release" / "dispatch")]
    assert commands(str(tmp_path))["dispatch"] == [str(tmp_path / "dispatch")]
    custom = commands(str(tmp_path), {"dispatch": "python3 fake.py 'a b'"})
    assert custom["dispatch"] == ["python3", "fake.py", "a b"]
    assert custom["api"] == [str(tmp_path / "api")]


def test_functions_sharing_a_binary_are_told_apart_by_handler(tmp_path: Path) -> None:
    """Two functions over one binary: one executable, two keys, each started with its _HANDLER."""
    tpl = load(tmp_path, """
Resources:
  A:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: one}}
    Properties: {Handler: first}
  B:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: one}}
    Properties: {Handler: second}
""")
    r = Resolver(tpl, region="us-east-1", account_id="123456789012")
    register_unprovisioned(r, tpl)
    specs = load_functions(tpl, r, profile="ci", binary_dir=None, commands={"second": "fake"},
                           env_overrides={}, base_env={})
    by_key = {s.key: s for s in specs}
    assert set(by_key) == {"first", "second"}
    assert by_key["first"].command == [str(tmp_path / "target" / "ci" / "one")]
    assert by_key["second"].command == ["fake"]
    assert by_key["first"].handler == "first" and by_key["second"].handler == "second"
    assert FunctionIndex(specs).get("second") is by_key["second"]
