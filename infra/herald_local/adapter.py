"""What the emulator asks of the project whose template it serves.

The rest of the package emulates what a SAM template describes - API Gateway WebSocket and HTTP
APIs with the @connections management API, Lambda's Runtime API, SQS event sources, EventBridge
Scheduler - for functions built as `provided` runtime binaries. A project's own conventions on top
of the template come from an `Adapter`: names, settings its functions read from their environment
besides the template's, development tokens, static files to serve (a demo page), the start banner.
`herald.py` is Herald's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .functions import FunctionSpec
    from .options import Options


class Adapter(Protocol):
    stack_name: str              # AWS::StackName; generated names are `<stack_name>-<LogicalId>`
    credentials: dict[str, str]  # boto3 keyword credentials given to the stack's own moto server
    control_path: str            # root of the control API on the WebSocket port, e.g. "/_local"
    template: Path               # --template default
    ready_file: Path             # --ready-file default
    # Directories served read-only on the WebSocket port, by URL prefix ("/client" serves
    # DIR/x at /client/x; a directory stands for its index.html). Empty: none.
    static_dirs: dict[str, Path]

    def function_env(self, specs: list[FunctionSpec], *, management_endpoint: str) -> dict[str, str]:
        """Variables laid over every function's template environment (--env still wins).
        `management_endpoint` is the local @connections base URL, http://HOST:PORT/STAGE."""

    def ready_info(self) -> dict[str, Any]:
        """Fields the ready file has besides the emulator's own."""

    def banner(self, info: dict[str, Any], options: Options) -> str:
        """Printed once the stack is ready; `info` is what the ready file holds."""

    def connection_info(self, authorizer: dict[str, Any]) -> dict[str, Any]:
        """What the control API lists about an open connection, from its authorizer context."""

    def issue_token(self, request: dict[str, Any]) -> str:
        """A development token for a control API `POST token` body (TypeError or ValueError
        when the body asks for something impossible)."""

    def add_token_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The options of the `token` subcommand."""

    def token_request(self, args: argparse.Namespace) -> dict[str, Any]:
        """The `POST token` body for the parsed options of the `token` subcommand."""
