"""How one local stack runs: its template, ports, scaling and checks. A module of its own, so the
adapter (which the stack imports) can name it without importing the stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .runtime import MAX_INSTANCES


@dataclass
class Options:
    template: Path
    profile: str = "debug"
    host: str = "127.0.0.1"
    ws_port: int = 0
    http_port: int = 0
    ready_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    visibility_timeout: int | None = None
    # Every function's Timeout is multiplied by this. Test harnesses run several stacks side by
    # side on a small machine, where a function's duration includes its wait for the CPU (and
    # moto's); a Lambda's CPU is its own. 1 (the template's timeouts) for `make dev`.
    timeout_scale: float = 1.0
    # Instances a function may run at once (runtime.MAX_INSTANCES by default).
    max_instances: int = MAX_INSTANCES
    idle_timeout_s: float = 600.0
    max_connection_s: float = 7200.0
    quiet: bool = False
    binary_dir: str | None = None
    binaries: dict[str, str] = field(default_factory=dict)
    # @connections requires SigV4 (IAM) like API Gateway; the fan-out benchmark turns it off so
    # its unsigned raw HTTP loop can reach the same endpoint.
    management_auth: str = "iam"
    # Each function's calls checked against its role in the template (access.py): "enforce"
    # refuses what the role does not allow, as AWS would; "report" only logs and records it;
    # "off" runs every function with the stack's own credentials.
    iam: str = "enforce"
    # What serves the template's DynamoDB tables when the stack runs its own endpoint: "dynalite"
    # (one Node process per table) or "moto" (one moto process per table).
    dynamodb: str = "dynalite"
