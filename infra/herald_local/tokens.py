"""Development JWT keys: an ES256 key made at start (published as an inline JWKS) and an HS256
secret.

The functions get the keys through their environment (the adapter names the variables) and
validate tokens exactly as they would on AWS; the stack only signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

KEY_ID = "local-1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(doc: dict[str, Any]) -> str:
    return _b64url(json.dumps(doc, separators=(",", ":")).encode())


@dataclass
class SigningKeys:
    hs256_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KEY_ID,
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }]}

    def sign(self, claims: dict[str, Any], alg: str = "ES256") -> str:
        """A compact JWS of `claims`: ES256 with the key of `jwks`, or HS256 with the secret."""
        if alg == "ES256":
            head = _json_b64({"alg": "ES256", "typ": "JWT", "kid": KEY_ID})
            signing_input = f"{head}.{_json_b64(claims)}".encode()
            r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants r||s, not DER
        elif alg == "HS256":
            head = _json_b64({"alg": "HS256", "typ": "JWT"})
            signing_input = f"{head}.{_json_b64(claims)}".encode()
            signature = hmac.new(self.hs256_secret.encode(), signing_input, hashlib.sha256).digest()
        else:
            raise ValueError(f"unsupported algorithm {alg} (ES256 or HS256)")
        return f"{signing_input.decode()}.{_b64url(signature)}"
