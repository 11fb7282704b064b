"""template.yaml: CloudFormation/SAM tags, intrinsic functions, SAM Globals.

The template is the single source of truth for the local stack. `Template` loads it; `Resolver`
evaluates intrinsics against parameter defaults, pseudo parameters and the physical ids/attributes
that provisioning registers as it goes (a reference to something not registered yet raises
`Unresolved`, which lets provisioning order itself by retrying).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """The template cannot be used as written."""


class Unresolved(Exception):
    """A reference to a resource or attribute that is not known (yet)."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"unresolved reference: {ref}")
        self.ref = ref


# --- YAML short-form tags ----------------------------------------------------------------

_FN_TAGS = ("Base64", "Cidr", "FindInMap", "GetAZs", "ImportValue", "Join", "Select", "Split",
            "Sub", "Transform", "And", "Equals", "If", "Not", "Or")


class _Loader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref x` into `{"Ref": x}`, `!Sub s` into `{"Fn::Sub": s}` etc."""


def _node_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _register_tags() -> None:
    for name in _FN_TAGS:
        _Loader.add_constructor(
            f"!{name}", lambda ld, nd, key=f"Fn::{name}": {key: _node_value(ld, nd)})
    _Loader.add_constructor("!Ref", lambda ld, nd: {"Ref": _node_value(ld, nd)})
    _Loader.add_constructor("!Condition", lambda ld, nd: {"Condition": _node_value(ld, nd)})

    def get_att(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value = _node_value(loader, node)
        if isinstance(value, str):  # !GetAtt Resource.Attribute
            value = value.split(".", 1)
        return {"Fn::GetAtt": value}

    _Loader.add_constructor("!GetAtt", get_att)


_register_tags()


# --- the template ------------------------------------------------------------------------

@dataclass
class Resource:
    logical_id: str
    type: str
    properties: dict[str, Any]
    metadata: dict[str, Any]
    condition: str | None


@dataclass
class Template:
    path: Path
    doc: dict[str, Any]
    resources: dict[str, Resource] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "Template":
        path = Path(path)
        try:
            doc = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateError(f"cannot read {path}: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
            raise TemplateError(f"{path}: no Resources section")
        tpl = cls(path=path, doc=doc)
        function_globals = (doc.get("Globals") or {}).get("Function") or {}
        for logical_id, body in doc["Resources"].items():
            props = body.get("Properties") or {}
            if body.get("Type") == "AWS::Serverless::Function":
                # SAM applies Globals before anything else sees the function.
                props = merge_globals(function_globals, props)
            tpl.resources[logical_id] = Resource(
                logical_id=logical_id,
                type=body.get("Type", ""),
                properties=props,
                metadata=body.get("Metadata") or {},
                condition=body.get("Condition"),
            )
        return tpl

    @property
    def directory(self) -> Path:
        return self.path.resolve().parent

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type in types]


def merge_globals(glob: Any, local: Any) -> Any:
    """SAM's Globals rule: maps merge key by key, lists concatenate, the function's scalar wins."""
    if isinstance(glob, dict) and isinstance(local, dict):
        merged = dict(glob)
        for key, value in local.items():
            merged[key] = merge_globals(glob[key], value) if key in glob else value
        return merged
    if isinstance(glob, list) and isinstance(local, list):
        return glob + local
    return local


# --- intrinsic functions -----------------------------------------------------------------

NO_VALUE = object()  # AWS::NoValue: removes the enclosing key or list item
_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class Resolver:
    """Evaluates intrinsics. `refs`/`attrs` are filled with physical ids and attributes."""

    def __init__(self, template: Template, *, region: str, account_id: str,
                 stack_name: str = "local", parameters: dict[str, str] | None = None) -> None:
        self.template = template
        self.refs: dict[str, Any] = {
            "AWS::Region": region,
            "AWS::AccountId": account_id,
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }
        self.attrs: dict[tuple[str, str], Any] = {}
        overrides = parameters or {}
        for name, spec in (template.doc.get("Parameters") or {}).items():
            if name in overrides:
                value: Any = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no default and no value")
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                value = [v.strip() for v in value.split(",")] if value else []
            self.refs[name] = str(value) if isinstance(value, (int, float)) else value
        self._conditions: dict[str, bool] = {}

    # Public API

    def resolve(self, value: Any) -> Any:
        """Evaluate every intrinsic inside `value` (NoValue entries are dropped)."""
        out = self._eval(value)
        return None if out is NO_VALUE else out

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.doc.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self._eval(conditions[name]))
        return self._conditions[name]

    def included(self, resource: Resource) -> bool:
        return resource.condition is None or self.condition(resource.condition)

    # Evaluation

    def _eval(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self._eval(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                handler = getattr(self, "_fn_" + key[4:].lower(), None)
                if handler is None:
                    raise TemplateError(f"{key} is not supported locally")
                return handler(arg)
        out = {}
        for k, v in value.items():
            evaluated = self._eval(v)
            if evaluated is not NO_VALUE:
                out[k] = evaluated
        return out

    def _ref(self, name: Any) -> Any:
        name = self._eval(name)
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.refs:
            return self.refs[name]
        if name in self.template.resources:
            raise Unresolved(name)
        raise TemplateError(f"Ref to unknown name {name}")

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        if (logical_id, attribute) in self.attrs:
            return self.attrs[(logical_id, attribute)]
        if logical_id in self.template.resources:
            raise Unresolved(f"{logical_id}.{attribute}")
        raise TemplateError(f"GetAtt of unknown resource {logical_id}")

    def _fn_getatt(self, arg: Any) -> Any:
        logical_id, attribute = self._eval(arg)
        return self._get_att(logical_id, attribute)

    def _fn_sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], self._eval(arg[1])
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} stays as ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return str(self._get_att(*name.split(".", 1)))
            return str(self._ref(name))

        return _SUB_VAR.sub(replace, text)

    def _fn_join(self, arg: Any) -> str:
        sep, items = self._eval(arg)
        return str(sep).join(str(i) for i in items)

    def _fn_split(self, arg: Any) -> list[str]:
        sep, text = self._eval(arg)
        return str(text).split(sep)

    def _fn_select(self, arg: Any) -> Any:
        index, items = self._eval(arg)
        return items[int(index)]

    def _fn_base64(self, arg: Any) -> str:
        return base64.b64encode(str(self._eval(arg)).encode()).decode()

    def _fn_getazs(self, arg: Any) -> list[str]:
        region = self._eval(arg) or self.refs["AWS::Region"]
        return [f"{region}{zone}" for zone in "abc"]

    def _fn_findinmap(self, arg: Any) -> Any:
        name, top, second = self._eval(arg)[:3]
        try:
            return self.template.doc["Mappings"][name][top][second]
        except KeyError as exc:
            raise TemplateError(f"FindInMap {name}/{top}/{second}: missing") from exc

    def _fn_if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self._eval(when_true if self.condition(name) else when_false)

    def _fn_equals(self, arg: Any) -> bool:
        left, right = self._eval(arg)
        return str(left) == str(right)

    def _fn_not(self, arg: Any) -> bool:
        return not self._eval(arg)[0]

    def _fn_and(self, arg: Any) -> bool:
        return all(self._eval(arg))

    def _fn_or(self, arg: Any) -> bool:
        return any(self._eval(arg))
