"""The local Web Push service (pushservice.py): RFC 8291 decryption, RFC 8292 token checks, the
headers a push must carry, and push faults."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Stack
from herald_local.faults import Faults
from herald_local.pushservice import _hmac, b64u, check_vapid, decrypt, public_bytes, unb64u


def encrypt(plain: bytes, ua_public: bytes, auth: bytes) -> bytes:
    """What an application server does (RFC 8291), independently of Herald's Rust code."""
    key = ec.generate_private_key(ec.SECP256R1())
    as_public, salt = public_bytes(key), os.urandom(16)
    ecdh = key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public))
    ikm = _hmac(_hmac(auth, ecdh), b"WebPush: info\0" + ua_public + as_public + b"\1")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\0\1")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\0\1")[:12]
    body = AESGCM(cek).encrypt(nonce, plain + b"\2", None)
    return salt + (4096).to_bytes(4, "big") + bytes([65]) + as_public + body


def vapid(key: ec.EllipticCurvePrivateKey, aud: str, exp: int) -> str:
    head = b64u(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
    claims = b64u(json.dumps({"aud": aud, "exp": exp, "sub": "mailto:t@example.com"}).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256())))
    sig = b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"vapid t={head}.{claims}.{sig}, k={b64u(public_bytes(key))}"


def test_decrypts_the_rfc8291_example() -> None:
    ua = ec.derive_private_key(int.from_bytes(unb64u("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"), "big"),
                               ec.SECP256R1())
    message = unb64u(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_"
        "yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    assert decrypt(message, ua, unb64u("BTBZMqHH6r4Tts7J_aSIgg")) == b"When I grow up, I want to be a watermelon"


def test_vapid_tokens_are_checked() -> None:
    key, now = ec.generate_private_key(ec.SECP256R1()), time.time()
    origin = "http://127.0.0.1:9"
    assert check_vapid(vapid(key, origin, int(now) + 600), origin, now) == b64u(public_bytes(key))
    for header, why in [(vapid(key, "http://127.0.0.1:10", int(now) + 600), "aud"),
                        (vapid(key, origin, int(now) - 1), "exp"),
                        (vapid(key, origin, int(now) + 3 * 24 * 3600), "exp"),
                        ("Bearer x", "vapid")]:
        try:
            check_vapid(header, origin, now)
        except ValueError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{header} passed")
    other = b64u(public_bytes(ec.generate_private_key(ec.SECP256R1())))
    forged = vapid(key, origin, int(now) + 600).rsplit("k=", 1)[0] + f"k={other}"
    try:
        check_vapid(forged, origin, now)
    except ValueError as exc:
        assert "signature" in str(exc)
    else:
        raise AssertionError("a token signed by another key passed")


def test_pushes_are_checked_decrypted_listed_and_faulted() -> None:
    from herald_local.pushservice import PushService

    async def run() -> dict[str, Any]:
        faults = Faults()
        service = PushService(faults, "/_t/push")
        app = web.Application()
        service.add_routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
        service.bind(origin)
        key = ec.generate_private_key(ec.SECP256R1())
        seen: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{origin}/_t/push/subscriptions") as r:
                    sub = await r.json()
                    seen["subscribe"] = r.status
                endpoint = sub["endpoint"]
                ua_public, auth = unb64u(sub["keys"]["p256dh"]), unb64u(sub["keys"]["auth"])

                async def push(headers: dict[str, str], body: bytes | None = None) -> int:
                    base = {"TTL": "60", "Content-Encoding": "aes128gcm", "Urgency": "high", "Topic": "score",
                            "Authorization": vapid(key, origin, int(time.time()) + 600)}
                    base.update(headers)
                    data = body if body is not None else encrypt(b'{"id":"n1"}', ua_public, auth)
                    async with session.post(endpoint, headers={k: v for k, v in base.items() if v}, data=data) as r:
                        return r.status

                seen["ok"] = await push({})
                seen["no_ttl"] = await push({"TTL": ""})
                seen["encoding"] = await push({"Content-Encoding": "aesgcm"})
                seen["topic"] = await push({"Topic": "x" * 33})
                seen["aud"] = await push({"Authorization": vapid(key, "https://elsewhere.example", int(time.time()) + 600)})
                seen["garbled"] = await push({}, os.urandom(200))
                seen["big"] = await push({}, os.urandom(4097))
                faults.add_push_fault(429, subscription_ids=[sub["id"]])
                seen["fault"] = await push({})
                seen["after_fault"] = await push({})
                async with session.get(f"{origin}/_t/push/subscriptions/{sub['id']}/messages") as r:
                    seen["messages"] = (await r.json())["messages"]
                async with session.delete(f"{origin}/_t/push/subscriptions/{sub['id']}") as r:
                    seen["unsubscribe"] = r.status
                seen["gone"] = await push({})
                async with session.post(f"{origin}/_t/push/send/nope", data=b"x") as r:
                    seen["unknown"] = r.status
        finally:
            await runner.cleanup()
        seen["counts"] = faults.counts
        return seen

    seen = asyncio.run(run())
    assert (seen["subscribe"], seen["ok"], seen["after_fault"]) == (201, 201, 201)
    assert (seen["no_ttl"], seen["encoding"], seen["topic"], seen["aud"]) == (400, 415, 400, 401)
    assert (seen["garbled"], seen["big"], seen["fault"]) == (400, 413, 429)
    assert (seen["unsubscribe"], seen["gone"], seen["unknown"]) == (204, 410, 404)
    assert [m["json"] for m in seen["messages"]] == [{"id": "n1"}, {"id": "n1"}]
    assert (seen["messages"][0]["ttl"], seen["messages"][0]["urgency"], seen["messages"][0]["topic"]) == (60, "high", "score")
    assert seen["counts"] == {"push429": 1}


def test_the_stack_serves_a_push_service(stack: Stack) -> None:
    status, sub, _ = stack.control("POST", "/push/subscriptions")
    assert status == 201 and sub["endpoint"].startswith(stack.info["pushServiceUrl"] + "/send/")
    status, body, _ = stack.control("POST", "/faults/push", {"status": 200})
    assert status == 400
