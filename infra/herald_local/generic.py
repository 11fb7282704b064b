"""The adapter for any SAM template: what the emulator does with no project conventions on top.

Nothing is added to the functions' environment (a function finds the local `@connections`
endpoint as it finds API Gateway's on AWS: `http://{requestContext.domainName}/{stage}`, or
through a variable the template sets and `--env` overrides), no development tokens are minted
(the template's authorizer decides what it accepts), nothing static is served. The stack name
is `--stack-name` (default `local`); the template and the ready file default to the current
directory's `template.yaml` and `.herald-local/ready.json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .functions import FunctionSpec
    from .options import Options


class Generic:
    """`adapter.Adapter` for a template of any project."""

    credentials = {"aws_access_key_id": "local", "aws_secret_access_key": "local-secret"}
    control_path = "/_local"
    static_dirs: dict[str, Path] = {}

    def __init__(self, stack_name: str = "local") -> None:
        self.stack_name = stack_name
        self.template = Path("template.yaml")
        self.ready_file = Path(".herald-local") / "ready.json"

    def function_env(self, specs: list[FunctionSpec], *, management_endpoint: str) -> dict[str, str]:
        return {}

    def ready_info(self) -> dict[str, Any]:
        return {}

    def connection_info(self, authorizer: dict[str, Any]) -> dict[str, Any]:
        return {"principalId": authorizer.get("principalId")}

    def issue_token(self, request: dict[str, Any]) -> str:
        raise ValueError("this stack mints no tokens (--adapter generic): its authorizer decides")

    def add_token_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def token_request(self, args: argparse.Namespace) -> dict[str, Any]:
        return {}

    def banner(self, info: dict[str, Any], options: Options) -> str:
        lines = ["", f"local stack '{self.stack_name}' is ready  ({options.template})",
                 f"  WebSocket      {info['websocketUrl']}",
                 f"  HTTP API       {info['httpUrl']}",
                 f"  @connections   {info['managementEndpoint']}/@connections/{{connectionId}}",
                 f"  control        {info['controlUrl']}",
                 f"  AWS endpoint   {info['awsEndpoint']}  (region {info['region']})",
                 *(f"  queue          {name}  {url}" for name, url in info.get("queues", {}).items()),
                 *(f"  table          {name}  {table}" for name, table in info.get("tables", {}).items()),
                 f"  ready file     {options.ready_file}", ""]
        return "\n".join(lines)
