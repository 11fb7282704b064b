"""Start-up and shutdown of the whole local stack, in the order local-stack.md describes.

What the stack adds for one project (names, extra function environment, ready-file fields) comes
from its `Adapter`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import socket
from typing import Any

from aiohttp import web

from . import aws, iam, stalls
from .access import Access, Identity, Target, access_key_for, grants_file
from .adapter import Adapter
from .control import Control
from .awsproxy import AwsProxy, Upstreams
from .cost import Meter
from .faults import Faults
from .functions import FunctionIndex, FunctionSpec, load_functions
from .gateway import Gateway
from .options import Options
from .sigv4 import Verifier
from .httpapi import http_api_from_template
from .pushservice import PushService
from .runtime import MAX_RESPONSE_BYTES, FunctionPool, RuntimeApi
from .scheduler import Scheduler
from .sqs_source import SqsPoller, mappings_from_functions
from .static import StaticDir
from .template import Resolver, Template
from .wsapi import WebSocketApi

log = logging.getLogger("herald_local")

INIT_WAIT_S = 15.0   # how long start-up waits for every function's first init
# Listen backlog of every port the stack serves (the kernel caps it at net.core.somaxconn).
# aiohttp's default, 128, overflowed under bursts of new connections (a fan-out's posts, a load
# tool's connects) while the event loop was busy: the kernel dropped the SYN, the client sent it
# again a second later, and a function's `@connections` post with a 1 s connect timeout failed.
BACKLOG = 4096


def _hash_keys(template: Any, resolver: Any, provisioned: aws.Provisioned) -> dict[str, str]:
    """Table name -> partition key attribute (DynamoDB's dynamodb:LeadingKeys)."""
    out = {}
    for logical_id, name in provisioned.tables.items():
        schema = resolver.resolve(template.resources[logical_id].properties).get("KeySchema") or []
        out.update({name: k["AttributeName"] for k in schema if k.get("KeyType") == "HASH"})
    return out


def _give_identities(access: Access, specs: list[FunctionSpec], overrides: dict[str, str]) -> None:
    """An access key of its own for every function, mapped to its role; the roles that a service
    (not a function) assumes get an identity too, so that the grant report covers them."""
    for spec in specs:
        role = access.policies.role_of(spec.logical_id)
        identity = Identity(function=spec.key, logical_id=spec.logical_id, name=spec.name,
                            access_key=access_key_for(spec.key),
                            secret_key=f"herald-local-{spec.key}", role=role)
        if role is None:
            log.info("IAM: %s has no Role in the template: its calls are not checked", spec.key)
        access.add(identity)
        # --env still wins (and then the calls are the stack's own: not checked).
        spec.env.update({k: v for k, v in identity.env().items() if k not in overrides})
    for role in access.policies.roles.values():
        if role.arn not in access.policies.function_roles.values() and role.services:
            for service in role.services:
                access.service_identity(service.split(".")[0], role.arn)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class Stack:
    def __init__(self, options: Options, adapter: Adapter) -> None:
        self.options = options
        self.adapter = adapter
        self.ready = asyncio.Event()
        self.info: dict[str, Any] = {}
        self.failed_functions: list[str] = []
        self._endpoint: aws.Endpoint | None = None
        self._aws_url = ""   # the ready file's `awsEndpoint` (the router when tables are split)
        self._runtime: RuntimeApi | None = None
        self._pools: dict[str, FunctionPool] = {}
        self._runners: list[web.AppRunner] = []
        self._gateway: Gateway | None = None
        self._background: list[SqsPoller | Scheduler] = []
        self._background_tasks: list[asyncio.Task[None]] = []
        self.access: Access | None = None
        self.meter = Meter()   # the cost meter (cost.py), read through the control API

    async def start(self) -> None:
        opts, adapter = self.options, self.adapter
        # boto3 calls (polls, schedules, provisioning) run in threads; the default pool of
        # cpu+4 threads is too small for several concurrent long-polls per queue.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="aws"))
        template = Template.load(opts.template)
        # A moto process for each table that can have one (aws.open_endpoint).
        tables = [t for t in template.of_type("AWS::DynamoDB::Table") if aws.has_own_process(t.properties)]
        self._endpoint = endpoint = await aws.open_endpoint(opts.host, adapter.credentials,
                                                            tables=len(tables),
                                                            dynamodb=opts.dynamodb)
        account = await asyncio.to_thread(aws.account_id, endpoint)
        resolver = Resolver(template, region=endpoint.region, account_id=account,
                            stack_name=adapter.stack_name)
        aws.register_unprovisioned(resolver, template)
        provisioned = await asyncio.to_thread(
            aws.provision, endpoint, template, resolver, opts.visibility_timeout)

        # Bind both ports first: the adapter may give the functions the real management endpoint.
        ws_sock, http_sock = _listen(opts.host, opts.ws_port), _listen(opts.host, opts.http_port)
        ws_base = f"http://{opts.host}:{ws_sock.getsockname()[1]}"
        http_url = f"http://{opts.host}:{http_sock.getsockname()[1]}"
        base_env = {**endpoint.env(), "AWS_EC2_METADATA_DISABLED": "true"}
        # One identity per function (their roles' policies, enforced by the proxy and the
        # gateway). Only with a moto of our own: an external endpoint (LocalStack, AWS) needs
        # credentials it knows, which the functions then share.
        access = target = None
        if opts.iam != "off" and endpoint.process is not None:
            policies = iam.policies_from_template(template, resolver)
            for note in policies.unmodelled:
                log.info("IAM: %s", note)
            self.access = access = Access(policies, enforce=opts.iam == "enforce",
                                          record_to=grants_file())
            target = Target(region=endpoint.region, account=account,
                            hash_keys=_hash_keys(template, resolver, provisioned))
        # Functions reach the endpoint through the proxy (trace headers on SQS, AWS faults, IAM).
        faults = Faults()
        upstreams = Upstreams(endpoint.url, endpoint.tables)
        proxy_sock = _listen(opts.host, 0)
        base_env["AWS_ENDPOINT_URL"] = f"http://{opts.host}:{proxy_sock.getsockname()[1]}"
        await self._serve(AwsProxy(upstreams, faults, access, target, meter=self.meter).application(),
                          proxy_sock)
        # Everyone else (tests, tools, the ready file's `awsEndpoint`) gets the same routes
        # without the faults; the meter counts their calls too (a producer's SendMessage is
        # part of what a notification costs).
        router_sock = _listen(opts.host, 0)
        self._aws_url = f"http://{opts.host}:{router_sock.getsockname()[1]}"
        await self._serve(AwsProxy(upstreams, Faults(), meter=self.meter, caller="producers").application(),
                          router_sock)
        specs = load_functions(template, resolver, profile=opts.profile, binary_dir=opts.binary_dir,
                               commands=opts.binaries, env_overrides=opts.env, base_env=base_env)
        for spec in specs:
            spec.timeout_s *= opts.timeout_scale
            self.meter.function(spec.key, spec.memory_mb, spec.architecture)
        if access is not None:
            _give_identities(access, specs, opts.env)
            access.record_universe()
        index = FunctionIndex(specs)
        api = WebSocketApi.from_template(template, resolver, index)
        stage = api.stage if api else "prod"
        management = f"{ws_base}/{stage}"
        # The adapter's variables beat the template's, --env beats both (as in load_functions).
        # The adapter only sets what the template gives a function: a secret the template keeps
        # from a function (least privilege) stays away from it locally too.
        extra_env = adapter.function_env(specs, management_endpoint=management)
        for spec in specs:
            spec.env.update({k: v for k, v in extra_env.items() if k not in opts.env and k in spec.env})

        self._runtime = RuntimeApi(opts.host)
        await self._runtime.start()
        self._pools = {s.key: FunctionPool(s, self._runtime, faults, cwd=str(template.directory),
                                              report=not opts.quiet, max_instances=opts.max_instances,
                                              meter=self.meter)
                       for s in specs}

        ws_app = web.Application(client_max_size=MAX_RESPONSE_BYTES)  # invoke: Lambda's 6 MB
        if api is not None:
            self._gateway = Gateway(api, self._pools, faults, region=endpoint.region,
                                    account_id=account, idle_timeout_s=opts.idle_timeout_s,
                                    max_connection_s=opts.max_connection_s,
                                    verifier=Verifier(endpoint.credentials, endpoint.region, more={
                                        i.access_key: i.secret_key for i in access.identities
                                    } if access else None) if opts.management_auth == "iam" else None,
                                    access=access, meter=self.meter)
            self._gateway.add_routes(ws_app)
        Control(gateway=self._gateway, pools=self._pools, faults=faults, adapter=adapter,
                ready=self.ready, info=lambda: self.info,
                sqs=endpoint.client("sqs"), access=access, meter=self.meter).add_routes(ws_app)
        # A Web Push service on the same origin as the control API (its loopback origin is the
        # one the adapter lets the functions push to over plain HTTP).
        push = PushService(faults, f"{adapter.control_path}/push")
        push.bind(ws_base)
        push.add_routes(ws_app)
        # The adapter's static directories (a demo page), on the same origin as the control API.
        static = [StaticDir(prefix, directory) for prefix, directory in
                  adapter.static_dirs.items()]
        for served in static:
            served.add_routes(ws_app)
        http_api = http_api_from_template(template, resolver, specs, self._pools, account, meter=self.meter)
        await self._serve(ws_app, ws_sock)
        await self._serve(http_api.application(), http_sock)

        for pool in self._pools.values():
            pool.start()
        settled = await asyncio.gather(*(p.wait_settled(INIT_WAIT_S) for p in self._pools.values()))
        self.failed_functions = [p.spec.key for p, ok in zip(self._pools.values(), settled) if not ok]

        sqs = endpoint.client("sqs", attempts=1)
        for mapping in mappings_from_functions(specs, provisioned):
            self._background.append(SqsPoller(mapping, self._pools[mapping.function.key], sqs,
                                              endpoint.region, access=access, meter=self.meter))
        self._background.append(Scheduler(endpoint.client("scheduler", attempts=1), index, self._pools,
                                          sqs=endpoint.client("sqs"), access=access,
                                          queue_urls=provisioned.queue_urls_by_arn, meter=self.meter))
        for worker in self._background:
            worker.start()

        self.info = self._describe(
            ws_url=f"ws://{opts.host}:{ws_sock.getsockname()[1]}/{stage}", management=management,
            http_url=http_url, control_url=f"{ws_base}{adapter.control_path}", stage=stage,
            push_url=f"{ws_base}{adapter.control_path}/push",
            provisioned=provisioned, specs=specs,
            static_urls={s.prefix: f"{ws_base}{s.prefix}/" for s in static})
        if opts.ready_file is not None:
            opts.ready_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = opts.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.info, indent=2))
            tmp.replace(opts.ready_file)  # readers never see a half-written file
        self._background_tasks.append(asyncio.create_task(stalls.watch()))
        # What start-up made (botocore's service models above all) lives as long as the stack:
        # out of the collector's sight, a full collection walks only what came after.
        stalls.freeze_start_up()
        self.ready.set()

    async def _serve(self, app: web.Application, sock: socket.socket) -> None:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=BACKLOG).start()
        self._runners.append(runner)

    def _describe(self, *, ws_url: str, management: str, http_url: str, control_url: str,
                  push_url: str, stage: str, provisioned: aws.Provisioned,
                  specs: list[FunctionSpec], static_urls: dict[str, str]) -> dict[str, Any]:
        assert self._endpoint is not None
        function_env: dict[str, str] = {}
        for spec in specs:  # the union; per-function differences are rare in this template
            function_env.update(spec.env)
        for key in ("PATH", "HOME", "LANG", "TZ"):
            function_env.pop(key, None)
        if self.access is not None:   # each function has keys of its own: the union has one's
            function_env.pop("AWS_ACCESS_KEY_ID", None)
            function_env.pop("AWS_SECRET_ACCESS_KEY", None)
        return {
            "websocketUrl": ws_url,
            "managementEndpoint": management,
            "httpUrl": http_url,
            "controlUrl": control_url,
            "pushServiceUrl": push_url,
            "awsEndpoint": self._aws_url,
            # What the functions reach it through (the proxy; awsproxy.py).
            "functionAwsEndpoint": function_env.get("AWS_ENDPOINT_URL", self._aws_url),
            "region": self._endpoint.region,
            # What the functions sign @connections calls with, for clients of the local stack.
            # Only the stack's own moto credentials (dummies); never ones from the environment.
            "managementCredentials": None if self._endpoint.process is None else {
                "accessKeyId": self._endpoint.credentials["aws_access_key_id"],
                "secretAccessKey": self._endpoint.credentials["aws_secret_access_key"]},
            "stage": stage,
            # How the functions' calls are authorized (access.py): enforce, report or off.
            "iam": self.options.iam if self.access is not None else "off",
            "queues": provisioned.queues,
            "tables": provisioned.tables,
            # Which moto process serves each table (aws.open_endpoint); `awsEndpoint` routes.
            "tableEndpoints": dict(self._endpoint.tables),
            "scheduleGroup": next(iter(provisioned.schedule_groups.values()), None),
            "buckets": provisioned.buckets,
            "staticUrls": static_urls,
            **self.adapter.ready_info(),
            "functionEnv": function_env,
            "functions": {s.key: {"logicalId": s.logical_id, "name": s.name, "arn": s.arn,
                                     "command": s.command, "running": s.key not in self.failed_functions}
                          for s in specs},
            "pid": os.getpid(),
        }

    async def close(self) -> None:
        """Stop everything this stack started; safe to call after a failed start."""
        if self.options.ready_file is not None and self.ready.is_set():
            self.options.ready_file.unlink(missing_ok=True)
        for task in self._background_tasks:
            task.cancel()
        for worker in self._background:
            await worker.close()
        if self._gateway is not None:
            await self._gateway.close()
        for runner in self._runners:
            await runner.cleanup()
        await asyncio.gather(*(pool.close() for pool in self._pools.values()))
        if self._runtime is not None:
            await self._runtime.close()
        if self._endpoint is not None:
            await self._endpoint.close()
