"""Herald's bindings: everything the local stack knows about Herald rather than about SAM.

Herald's template and functions expect, besides what the template says (docs/runtime-contract.md):
- the stack name `herald`: functions are named `${AWS::StackName}-<handler>`;
- HERALD_JWT_*, the settings the functions validate tokens with: locally the stack's development
  keys (issuer herald-local, audience herald), so that the tokens it signs pass;
- HERALD_WS_ENDPOINT, the @connections endpoint the functions post to: locally the gateway's;
- HERALD_VAPID_*, a Web Push key pair generated at start, and HERALD_PUSH_INSECURE_ORIGIN, the
  local push service's loopback origin (pushservice.py), the one http:// origin the functions
  accept push subscriptions for (in AWS it is empty: https:// only);
- Herald's claims in those tokens (sub, tenant, roles, groups) and in the authorizer context
  (user, tenant).
The start banner, the demo page it serves (client/, so that client/demo/ imports the client as it
ships) and the defaults of --template and --ready-file (this repository's files) are Herald's too. Everything else in the package is the general emulator (see adapter.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from urllib.parse import urlsplit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .functions import FunctionSpec
from .options import Options
from .tokens import KEY_ID, SigningKeys

# The checkout this file is in (an editable install, as make does it, keeps it there).
REPO = Path(__file__).resolve().parents[2]

ISSUER = "herald-local"
AUDIENCE = "herald"
ALGORITHMS = "ES256,HS256"
DEV_TOKEN_TTL_S = 12 * 3600
# Settings whose template default is "off", turned on locally so that `make dev` demonstrates
# them without configuration: members may publish to `room:*` groups, whose members get
# presence events of each other. `--env` still wins.
LOCAL_DEFAULTS = {
    "HERALD_PUBLISH_POLICY": "room=member",
    "HERALD_PRESENCE_KINDS": "room",
}


@dataclass
class TokenIssuer:
    """Herald's development tokens, signed with keys its functions are given (HERALD_JWT_*)."""

    tenant_claim: str = "tenant"
    keys: SigningKeys = field(default_factory=SigningKeys)

    @property
    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks

    @property
    def hs256_secret(self) -> str:
        return self.keys.hs256_secret

    def function_env(self) -> dict[str, str]:
        """HERALD_JWT_* for the functions (JWKS_URL is cleared: the keys are inline)."""
        return {
            "HERALD_JWT_ISSUER": ISSUER,
            "HERALD_JWT_AUDIENCE": AUDIENCE,
            "HERALD_JWT_ALGORITHMS": ALGORITHMS,
            "HERALD_JWT_JWKS": json.dumps(self.jwks, separators=(",", ":")),
            "HERALD_JWT_JWKS_URL": "",
            "HERALD_JWT_HS256_SECRET": self.hs256_secret,
        }

    def issue(self, sub: str, tenant: str, *, roles: list[str] | None = None,
              groups: list[str] | None = None, ttl_s: int = 3600, alg: str = "ES256",
              extra: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, self.tenant_claim: tenant,
            "roles": roles or [], "iat": now, "nbf": now, "exp": now + ttl_s,
        }
        if groups is not None:
            claims["groups"] = groups
        claims.update(extra or {})
        return self.keys.sign(claims, alg)

    def dev_token(self) -> str:
        return self.issue("dev-user", "dev", roles=["admin", "service"], ttl_s=DEV_TOKEN_TTL_S)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class VapidKeys:
    """A VAPID key pair (RFC 8292) in the format the functions read: base64url of the private
    scalar and of the uncompressed public point."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    subject: str = "mailto:dev@herald.localhost"

    @property
    def private(self) -> str:
        return _b64u(self.key.private_numbers().private_value.to_bytes(32, "big"))

    @property
    def public(self) -> str:
        return _b64u(self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                        serialization.PublicFormat.UncompressedPoint))


class Herald:
    """The local stack's adapter for Herald (the interface is `adapter.Adapter`)."""

    stack_name = "herald"
    credentials = {"aws_access_key_id": "herald", "aws_secret_access_key": "herald-local"}
    control_path = "/_herald"
    template = REPO / "template.yaml"
    ready_file = REPO / "infra" / ".state" / "ready.json"
    # The browser client's directory, so that the demo page (client/demo/) imports ../herald.js
    # exactly as it ships: no copy, no build step.
    static_dirs = {"/client": REPO / "client"}
    demo_path = "demo/"

    def __init__(self) -> None:
        self.tokens = TokenIssuer()
        self.vapid = VapidKeys()

    def function_env(self, specs: list[FunctionSpec], *, management_endpoint: str) -> dict[str, str]:
        # Tokens carry the tenant in the claim the functions read it from.
        self.tokens.tenant_claim = next(
            (s.env["HERALD_JWT_TENANT_CLAIM"] for s in specs if s.env.get("HERALD_JWT_TENANT_CLAIM")),
            "tenant")
        # The push service shares the management endpoint's origin (the WebSocket port).
        url = urlsplit(management_endpoint)
        return {**self.tokens.function_env(), "HERALD_WS_ENDPOINT": management_endpoint,
                "HERALD_VAPID_PRIVATE_KEY": self.vapid.private, "HERALD_VAPID_PUBLIC_KEY": self.vapid.public,
                "HERALD_VAPID_SUBJECT": self.vapid.subject,
                "HERALD_PUSH_INSECURE_ORIGIN": f"{url.scheme}://{url.netloc}",
                **LOCAL_DEFAULTS}

    def ready_info(self) -> dict[str, Any]:
        return {
            "jwt": {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ALGORITHMS,
                    "hs256Secret": self.tokens.hs256_secret, "jwks": self.tokens.jwks,
                    "tenantClaim": self.tokens.tenant_claim},
            "devToken": self.tokens.dev_token(),
            "vapidPublicKey": self.vapid.public,
        }

    def connection_info(self, authorizer: dict[str, Any]) -> dict[str, Any]:
        return {"user": authorizer.get("user", authorizer.get("principalId")),
                "tenant": authorizer.get("tenant")}

    def issue_token(self, request: dict[str, Any]) -> str:
        return self.tokens.issue(
            str(request.get("sub", "dev-user")), str(request.get("tenant", "dev")),
            roles=list(request.get("roles") or []),
            groups=list(request["groups"]) if request.get("groups") is not None else None,
            ttl_s=int(request.get("ttlSeconds", 3600)), alg=str(request.get("alg", "ES256")),
            extra=request.get("claims"))

    def add_token_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sub", default="dev-user")
        parser.add_argument("--tenant", default="dev")
        parser.add_argument("--roles", type=_csv, default=[], help="comma list")
        parser.add_argument("--groups", type=_csv, help="comma list (the token's groups claim)")
        parser.add_argument("--ttl", type=int, default=3600, help="seconds")
        parser.add_argument("--alg", default="ES256", choices=["ES256", "HS256"])

    def token_request(self, args: argparse.Namespace) -> dict[str, Any]:
        body: dict[str, Any] = {"sub": args.sub, "tenant": args.tenant, "roles": args.roles,
                                "ttlSeconds": args.ttl, "alg": args.alg}
        if args.groups is not None:
            body["groups"] = args.groups
        return body

    def banner(self, info: dict[str, Any], options: Options) -> str:
        queues = info["queues"]
        dispatch = queues.get("DispatchQueue") or next(iter(queues.values()), "<no queue>")
        endpoint, region, jwt = info["awsEndpoint"], info["region"], info["jwt"]
        binaries = options.binary_dir or f"target/{options.profile}"
        if options.binaries:
            binaries += f", {len(options.binaries)} overridden"
        creds = info.get("managementCredentials")
        if options.management_auth == "none":
            signing = "unsigned calls accepted"
        elif creds:
            signing = f"SigV4 for execute-api: key {creds['accessKeyId']}, secret {creds['secretAccessKey']}"
        else:
            signing = "SigV4 for execute-api with your AWS_* credentials"
        ready = "" if options.ready_file == self.ready_file else f" --ready-file {options.ready_file}"
        message = ('{"tenant": "dev", "to": {"user": "dev-user"}, "event": "demo.hello", '
                   '"title": "Hello from the local stack"}')
        demo = info.get("staticUrls", {}).get("/client")
        lines = [
            "",
            f"Herald local stack is ready  ({options.template}; binaries: {binaries})",
            *([f"  demo page      {demo}{self.demo_path}  (open it in a browser)"] if demo else []),
            f"  WebSocket      {info['websocketUrl']}?token=JWT  (or subprotocols [\"herald.v1\", JWT])",
            f"  HTTP API       {info['httpUrl']}",
            f"  @connections   {info['managementEndpoint']}/@connections/{{connectionId}}  ({signing})",
            f"  control        {info['controlUrl']}",
            f"  Web Push       {info['pushServiceUrl']}  (POST subscriptions: a subscription to PUT to "
            "/push/subscriptions; GET messages: the pushes it received, decrypted)",
            f"  AWS endpoint   {endpoint}  (region {region}, any credentials)",
            f"  dispatch queue {dispatch}",
            f"  JWT            issuer {jwt['issuer']}, audience {jwt['audience']}, algorithms "
            f"{jwt['algorithms']}; ES256 key kid {KEY_ID} as inline JWKS, HS256 secret in the ready file",
            f"  ready file     {options.ready_file}",
            "  dev token      sub dev-user, tenant dev, roles admin,service; valid 12 h:",
            "",
            f"export TOKEN={info['devToken']}",
            "",
            "Try:",
            f"  websocat \"{info['websocketUrl']}?token=$TOKEN\"",
            f"  python -m websockets \"{info['websocketUrl']}?token=$TOKEN\"   (pip install websockets)",
            f"  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x aws --region {region} --endpoint-url {endpoint} "
            f"sqs send-message --queue-url {dispatch} --message-body '{message}'",
            f"  python -c 'import boto3; boto3.client(\"sqs\", endpoint_url=\"{endpoint}\", "
            f"region_name=\"{region}\", aws_access_key_id=\"x\", aws_secret_access_key=\"x\")"
            f".send_message(QueueUrl=\"{dispatch}\", MessageBody={json.dumps(message)})'",
            f"  PYTHONPATH=infra python -m herald_local token{ready} --sub u1 --tenant acme --roles instructor",
            f"  PYTHONPATH=infra python -m herald_local invoke{ready} ws-message -e events/ws-message-ping.json",
            "",
        ]
        return "\n".join(lines)
