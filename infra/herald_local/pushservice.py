"""A Web Push service (RFC 8030) for the local stack, as strict as a real one about what it takes.

It hands out subscriptions (endpoint + p256dh + auth, the browser's `PushSubscription` JSON) and
keeps their private keys, so it can do what a browser does with a push: decrypt it. A push to an
endpoint must carry a valid VAPID token (RFC 8292: ES256, signed by the `k=` key, `aud` the
endpoint's origin, `exp` in the future and at most 24 h ahead), `TTL`, `Content-Encoding:
aes128gcm` and an RFC 8291 body of at most 4096 bytes; it answers 201, or what a push fault asks
for (404, 410, 429, 5xx: `faults.py`). What arrived is listed, decrypted, for tests and `make dev`.

Routes (under `root`, the control API's `/push`):
- POST   subscriptions                 a new subscription (`{"id", "endpoint", "keys": {...}}`)
- DELETE subscriptions/{id}            unsubscribed: pushes to it answer 410 from now on
- GET    subscriptions/{id}/messages   what it received, decrypted
- GET    messages                      everything received (newest last)
- POST   send/{id}                     the push endpoint itself
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .faults import Faults

MAX_MESSAGE = 4096              # RFC 8030 §7.2: what a push service must accept at least
MAX_TOKEN_LIFETIME_S = 24 * 3600  # RFC 8292 §2
URGENCIES = ("very-low", "low", "normal", "high")
KEEP_MESSAGES = 1000            # received messages kept per subscription


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    text = text.strip().rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hmac(key: bytes, *parts: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    for part in parts:
        h.update(part)
    return h.finalize()


def public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


def decrypt(body: bytes, private: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """RFC 8291 / RFC 8188 (`aes128gcm`, one record): what the browser does. ValueError if the
    body is not a message for this key and secret."""
    if len(body) < 21:
        raise ValueError("shorter than the aes128gcm header")
    salt, record_size, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public = body[21:21 + idlen]
    ciphertext = body[21 + idlen:]
    if idlen != 65 or record_size < 18 or len(ciphertext) > record_size:
        raise ValueError("not one aes128gcm record with a P-256 key id")
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
    ecdh = private.exchange(ec.ECDH(), peer)
    ua_public = public_bytes(private)
    ikm = _hmac(_hmac(auth, ecdh), b"WebPush: info\0" + ua_public + as_public + b"\1")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\0\1")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\0\1")[:12]
    try:
        plain = AESGCM(cek).decrypt(nonce, ciphertext, None)
    except InvalidTag:
        raise ValueError("the AEAD tag does not verify (wrong keys or a corrupted body)") from None
    end = len(plain.rstrip(b"\0"))
    if end == 0 or plain[end - 1] != 2:
        raise ValueError("the last record does not end with the 0x02 delimiter")
    return plain[:end - 1]


def check_vapid(header: str, endpoint_origin: str, now: float) -> str:
    """Checks `Authorization: vapid t=JWT, k=KEY`; returns the key. ValueError says why not."""
    if not header.lower().startswith("vapid "):
        raise ValueError("Authorization must be `vapid t=..., k=...`")
    params: dict[str, str] = {}
    for part in header[6:].split(","):
        name, _, value = part.strip().partition("=")
        params[name.strip()] = value.strip()
    token, key = params.get("t", ""), params.get("k", "")
    try:
        head, claims, signature = (unb64u(p) for p in token.split("."))
        header_json, claims_json = json.loads(head), json.loads(claims)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(key))
    except (ValueError, TypeError):
        raise ValueError("the VAPID token or key does not decode") from None
    if header_json.get("alg") != "ES256" or len(signature) != 64:
        raise ValueError("the VAPID token must be ES256 with a 64-byte signature")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, token.rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("the VAPID signature does not verify with k") from None
    if claims_json.get("aud") != endpoint_origin:
        raise ValueError(f"aud must be the endpoint's origin {endpoint_origin}")
    exp = claims_json.get("exp")
    if not isinstance(exp, int) or exp <= now or exp > now + MAX_TOKEN_LIFETIME_S + 60:
        raise ValueError("exp must be in the future and at most 24 h ahead")
    return key


@dataclass
class Subscription:
    id: str
    private: ec.EllipticCurvePrivateKey
    auth: bytes
    gone: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)


class PushService:
    def __init__(self, faults: Faults, root: str) -> None:
        self._faults = faults
        self._root = root.rstrip("/")
        self._origin = ""   # set by `bind`, once the port is known
        self._subs: dict[str, Subscription] = {}
        self._log: list[dict[str, Any]] = []

    def bind(self, origin: str) -> None:
        """The origin (`http://HOST:PORT`) the push endpoints are served on."""
        self._origin = origin.rstrip("/")

    @property
    def origin(self) -> str:
        return self._origin

    def add_routes(self, app: web.Application) -> None:
        r, root = app.router, self._root
        r.add_post(f"{root}/subscriptions", self._subscribe)
        r.add_delete(f"{root}/subscriptions/{{id}}", self._unsubscribe)
        r.add_get(f"{root}/subscriptions/{{id}}/messages", self._messages_of)
        r.add_get(f"{root}/messages", self._messages)
        r.add_post(f"{root}/send/{{id}}", self._push)

    def subscribe(self) -> dict[str, Any]:
        sub = Subscription(secrets.token_urlsafe(12), ec.generate_private_key(ec.SECP256R1()),
                           os.urandom(16))
        self._subs[sub.id] = sub
        return {"id": sub.id, "endpoint": f"{self._origin}{self._root}/send/{sub.id}",
                "expirationTime": None,
                "keys": {"p256dh": b64u(public_bytes(sub.private)), "auth": b64u(sub.auth)}}

    async def _subscribe(self, _: web.Request) -> web.Response:
        return web.json_response(self.subscribe(), status=201)

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        sub = self._subs.get(request.match_info["id"])
        if sub is None:
            return _error(404, "no such subscription")
        sub.gone = True
        return web.Response(status=204)

    async def _messages_of(self, request: web.Request) -> web.Response:
        sub = self._subs.get(request.match_info["id"])
        if sub is None:
            return _error(404, "no such subscription")
        return web.json_response({"messages": sub.received, "gone": sub.gone})

    async def _messages(self, _: web.Request) -> web.Response:
        return web.json_response({"messages": self._log[-KEEP_MESSAGES:]})

    async def _push(self, request: web.Request) -> web.Response:
        sub = self._subs.get(request.match_info["id"])
        if sub is None:
            return _error(404, "no such subscription")
        if sub.gone:
            return _error(410, "the subscription has expired or was unsubscribed")
        fault = self._faults.push_fault(sub.id)
        if fault is not None:
            status, headers = fault
            return web.json_response({"error": "injected push fault"}, status=status, headers=headers)
        h = request.headers
        ttl = h.get("TTL", "")
        if not ttl.isdigit():
            return _error(400, "the TTL header is required (seconds)")
        if h.get("Content-Encoding", "").lower() != "aes128gcm":
            return _error(415, "Content-Encoding must be aes128gcm")
        urgency = h.get("Urgency")
        if urgency is not None and urgency not in URGENCIES:
            return _error(400, f"Urgency must be one of {', '.join(URGENCIES)}")
        topic = h.get("Topic")
        if topic is not None and (not 0 < len(topic) <= 32 or
                                  not all(c.isalnum() or c in "-_" for c in topic) or not topic.isascii()):
            return _error(400, "Topic must be 1..32 URL-safe base64 characters")
        try:
            check_vapid(h.get("Authorization", ""), self._origin, time.time())
        except ValueError as exc:
            return _error(401, str(exc))
        body = await request.read()
        if len(body) > MAX_MESSAGE:
            return _error(413, f"the body is {len(body)} bytes; at most {MAX_MESSAGE}")
        try:
            plain = decrypt(body, sub.private, sub.auth)
        except ValueError as exc:
            return _error(400, f"cannot decrypt: {exc}")
        text = plain.decode("utf-8", errors="replace")
        try:
            parsed: Any = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        message = {"subscription": sub.id, "ttl": int(ttl), "urgency": urgency, "topic": topic,
                   "size": len(body), "payload": text, "json": parsed,
                   "receivedAt": int(time.time() * 1000)}
        sub.received.append(message)
        del sub.received[:-KEEP_MESSAGES]
        self._log.append(message)
        del self._log[:-KEEP_MESSAGES]
        return web.Response(status=201, headers={
            "Location": f"{self._origin}{self._root}/subscriptions/{sub.id}/messages"})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
