"""The template's functions: what to run for each and with which environment.

A function is known by its logical id, its function name (what ARNs end with), and its key: the
`Handler` when the template sets one other than `bootstrap` (several functions can share one
binary, `Metadata.BuildProperties.Binary`, and tell themselves apart by `_HANDLER`, as on Lambda),
else the binary. The key is the name it goes by in logs, the control API and the command line. By
default the executable is `target/<profile>/<Binary>` next to the template; `--binary KEY=COMMAND`
or `--binary-dir DIR` (or HERALD_LOCAL_BIN_DIR) run something else, which is how the tests run
small Python fakes without building the Rust workspace.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aws import function_name
from .template import Resolver, Template, TemplateError

DEFAULT_TIMEOUT_S = 3      # SAM's defaults when neither the function nor Globals say
DEFAULT_MEMORY_MB = 128

# Passed through from the stack's own environment: what a process needs to run at all, and the
# knobs a developer sets for the Rust binaries. Everything else comes from the template.
_INHERITED = ("PATH", "HOME", "LANG", "TZ", "RUST_LOG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE",
              "SSL_CERT_FILE", "SSL_CERT_DIR")

_ARN_FUNCTION = re.compile(r"arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:/]+)")


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    binary: str
    command: list[str]
    env: dict[str, str]
    timeout_s: float
    memory_mb: int
    architecture: str = "x86_64"   # the template's Architectures (Lambda's default: x86_64)
    handler: str = "bootstrap"   # the template's Handler; the process gets it as _HANDLER
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # resolved SAM Events
    # SAM's EventInvokeConfig: retries and destinations of asynchronous invocations (Scheduler's)
    event_invoke: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The function's short name (logs, control API, --binary overrides)."""
        return self.handler if self.handler and self.handler != "bootstrap" else self.binary

    @property
    def available(self) -> bool:
        """The executable exists (checked at each start, so a later `cargo build` is seen)."""
        return shutil.which(self.command[0]) is not None


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def load_functions(template: Template, resolver: Resolver, *, profile: str,
                   binary_dir: str | None, commands: dict[str, str],
                   env_overrides: dict[str, str], base_env: dict[str, str]) -> list[FunctionSpec]:
    """Every included AWS::Serverless::Function, resolved.

    Environment precedence: inherited basics < template (Globals + function) < `base_env` (the
    local AWS endpoint) < `env_overrides` (--env). The stack then adds its adapter's variables
    between the template's and --env.
    """
    specs = []
    for res in template.of_type("AWS::Serverless::Function"):
        if not resolver.included(res):
            continue
        props = resolver.resolve(res.properties)
        # cargo-lambda's binary name; else the function is known by its logical id and runs
        # CodeUri/bootstrap, the executable of a `provided` runtime as `sam build` lays it out.
        binary = ((res.metadata.get("BuildProperties") or {}).get("Binary"))
        code_uri = props.get("CodeUri")
        bootstrap = None if binary or not isinstance(code_uri, str) else template.directory / code_uri / "bootstrap"
        binary = binary or res.logical_id
        variables = (props.get("Environment") or {}).get("Variables") or {}
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update({k: _env_value(v) for k, v in variables.items()})
        env.update(base_env)
        env.update(env_overrides)
        handler = str(props.get("Handler") or "bootstrap")
        key = handler if handler != "bootstrap" else binary
        if key in commands:
            command = shlex.split(commands[key])
        elif res.logical_id in commands:
            command = shlex.split(commands[res.logical_id])
        elif bootstrap is not None and not binary_dir:
            command = [str(bootstrap)]
        elif binary_dir:
            command = [str(Path(binary_dir).resolve() / binary)]
        else:
            command = [str(template.directory / "target" / profile / binary)]
        name = function_name(resolver, res)
        specs.append(FunctionSpec(
            logical_id=res.logical_id,
            name=name,
            arn=resolver.attrs[(res.logical_id, "Arn")],
            binary=binary,
            handler=handler,
            command=command,
            env=env,
            timeout_s=float(props.get("Timeout") or DEFAULT_TIMEOUT_S),
            memory_mb=int(props.get("MemorySize") or DEFAULT_MEMORY_MB),
            architecture=str((props.get("Architectures") or ["x86_64"])[0]),
            events=props.get("Events") or {},
            event_invoke=props.get("EventInvokeConfig") or {},
        ))
    return specs


class FunctionIndex:
    """Find a function by ARN (integration URIs, schedule targets), binary or logical id."""

    def __init__(self, specs: list[FunctionSpec]) -> None:
        self._keys: dict[str, FunctionSpec] = {}
        for spec in specs:
            for key in (spec.logical_id, spec.key, spec.name):
                self._keys.setdefault(key, spec)

    def get(self, key: str) -> FunctionSpec | None:
        """`key`: a binary, logical id, function name, or any string containing a Lambda ARN
        (API Gateway integration URIs wrap the function ARN)."""
        match = _ARN_FUNCTION.search(key)
        return self._keys.get(match.group(1) if match else key)
