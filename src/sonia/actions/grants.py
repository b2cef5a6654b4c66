"""Execution grants: compact tokens EVA signs and OpenClaw checks before running anything.

    base64url(header) "." base64url(payload) "." base64url(signature)

The header is always exactly `{"alg":"EdDSA","typ":"sonia-grant"}`; the payload
is `{jti, action_id, tool, plan_hash, aud: "openclaw", iat, exp}` (integer
seconds) in canonical JSON; the signature is Ed25519 over the ASCII bytes of
`header "." payload`, like a JWS. The verifier never takes the algorithm from
the token: it always checks Ed25519 with EVA's public key, so `alg: none` and
the HS256-with-the-public-key confusion have nothing to work with, and any
other header is refused outright.

`GrantVerifier.verify` checks, in this order, and names the failed check in
the INVALID_APPROVAL detail: size and shape (three parts, unpadded canonical
base64url), signature, header, payload fields, audience, time (`iat`/`exp`
with a small skew and a bounded lifetime), tool, plan hash (recomputed from
the tool and arguments actually requested). Single use is the ledger's job
(`grant_ledger.consume`, after `verify`). A request with no grant at all is a
POLICY_DENIED, not an INVALID_APPROVAL: `require_grant` says so.

EVA publishes its public key (`GET /v1/grant-key`) as a JWK-style object,
`public_key_jwk`; `load_public_key` reads that, raw base64url or PEM.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sonia.actions.plan import canonical_json, plan_hash
from sonia.errors import ConfigError, InvalidApproval, PolicyDenied

__all__ = [
    "AUDIENCE",
    "HEADER",
    "GrantClaims",
    "GrantSigner",
    "GrantVerifier",
    "b64url_decode",
    "b64url_encode",
    "load_public_key",
    "public_key_jwk",
    "public_key_pem",
    "require_grant",
]

AUDIENCE = "openclaw"
HEADER: dict[str, str] = {"alg": "EdDSA", "typ": "sonia-grant"}
MAX_TOKEN_CHARS = 1024
MAX_LIFETIME_SECONDS = 300
"""No grant may live longer than this, whatever `exp` says (EvaSettings caps the TTL at 300)."""
DEFAULT_SKEW_SECONDS = 5
SIGNATURE_CHARS = 86
"""An Ed25519 signature is 64 bytes: 86 base64url characters without padding."""
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CLAIMS = ("jti", "action_id", "tool", "plan_hash", "aud", "iat", "exp")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515, section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: wrong alphabet, padding or non-canonical trailing bits
    raise ValueError, so every token has exactly one spelling."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


_HEADER_SEGMENT = b64url_encode(canonical_json(HEADER))


@dataclass(frozen=True)
class GrantClaims:
    """The signed content of a grant."""

    jti: str
    action_id: str
    tool: str
    plan_hash: str
    aud: str
    iat: int
    exp: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GrantSigner:
    """Mints grants with EVA's private key (only EVA holds one)."""

    def __init__(self, private_key: Ed25519PrivateKey, ttl: float = 30.0) -> None:
        if not 0 < ttl <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"grant ttl must be in (0, {MAX_LIFETIME_SECONDS}] seconds")
        self._key = private_key
        self.ttl = max(1, int(ttl))
        self.public_key = private_key.public_key()

    def mint(
        self, action_id: str, tool: str, plan_hash: str, *, now: float | None = None
    ) -> tuple[str, GrantClaims]:
        """A fresh single-use grant for `action_id` to run `tool` with the hashed plan."""
        issued = int(time.time() if now is None else now)
        claims = GrantClaims(jti=secrets.token_urlsafe(16), action_id=action_id, tool=tool,
                             plan_hash=plan_hash, aud=AUDIENCE, iat=issued,
                             exp=issued + self.ttl)
        payload = b64url_encode(canonical_json(claims.to_dict()))
        signing_input = f"{_HEADER_SEGMENT}.{payload}".encode("ascii")
        signature = b64url_encode(self._key.sign(signing_input))
        return f"{_HEADER_SEGMENT}.{payload}.{signature}", claims


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _strict_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                      parse_constant=_reject_constant)


class GrantVerifier:
    """Checks grants with EVA's public key (all OpenClaw holds): it can check, never mint."""

    def __init__(self, public_key: Ed25519PublicKey, *,
                 skew_seconds: int = DEFAULT_SKEW_SECONDS) -> None:
        self._key = public_key
        self.skew = skew_seconds

    def verify(
        self, token: object, *, tool: str, args: dict[str, Any], now: float | None = None
    ) -> GrantClaims:
        """The claims of `token` if it is EVA's, fresh, for OpenClaw, and for exactly this
        `tool` and `args`; otherwise InvalidApproval naming the failed check."""
        header_b64, payload_b64, signature = self._split(token)
        try:
            self._key.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
        except InvalidSignature:
            raise InvalidApproval("grant signature does not verify") from None
        if header_b64 != _HEADER_SEGMENT:
            raise InvalidApproval('grant header must be exactly {"alg":"EdDSA",'
                                  '"typ":"sonia-grant"}')
        claims = self._claims(payload_b64)
        if claims.aud != AUDIENCE:
            raise InvalidApproval(f"grant audience is {claims.aud!r}, not {AUDIENCE!r}")
        self._check_time(claims, time.time() if now is None else now)
        if claims.tool != tool:
            raise InvalidApproval(f"grant is for tool {claims.tool}, not {tool}")
        if not hmac.compare_digest(claims.plan_hash, plan_hash(tool, args)):
            raise InvalidApproval("grant plan_hash does not match the requested tool and args")
        return claims

    @staticmethod
    def _split(token: object) -> tuple[str, str, bytes]:
        if not isinstance(token, str) or not token:
            raise InvalidApproval("grant is not a non-empty string")
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidApproval(f"grant is longer than {MAX_TOKEN_CHARS} characters")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidApproval(f"grant has {len(parts)} parts, not 3")
        header_b64, payload_b64, signature_b64 = parts
        if not header_b64 or not payload_b64 or len(signature_b64) != SIGNATURE_CHARS:
            raise InvalidApproval("grant parts are empty or the signature has the wrong size")
        try:
            signature = b64url_decode(signature_b64)
            b64url_decode(header_b64)
            b64url_decode(payload_b64)
        except ValueError as exc:
            raise InvalidApproval(f"grant is malformed: {exc}") from None
        return header_b64, payload_b64, signature

    @staticmethod
    def _claims(payload_b64: str) -> GrantClaims:
        try:
            payload = _strict_json(b64url_decode(payload_b64))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidApproval(f"grant payload is not JSON: {exc}") from None
        if not isinstance(payload, dict) or set(payload) != set(_CLAIMS):
            raise InvalidApproval(f"grant payload must have exactly the fields "
                                  f"{', '.join(_CLAIMS)}")
        for name in ("jti", "action_id", "tool", "plan_hash", "aud"):
            if not isinstance(payload[name], str) or not payload[name]:
                raise InvalidApproval(f"grant field {name} must be a non-empty string")
        for name in ("iat", "exp"):
            if not isinstance(payload[name], int) or isinstance(payload[name], bool):
                raise InvalidApproval(f"grant field {name} must be an integer")
        if not _HEX64.match(payload["plan_hash"]):
            raise InvalidApproval("grant field plan_hash must be 64 lower-case hex digits")
        return GrantClaims(**payload)

    def _check_time(self, claims: GrantClaims, now: float) -> None:
        if claims.exp <= claims.iat:
            raise InvalidApproval("grant expires before it is issued")
        if claims.exp - claims.iat > MAX_LIFETIME_SECONDS:
            raise InvalidApproval(f"grant lifetime exceeds {MAX_LIFETIME_SECONDS} seconds")
        if claims.iat > now + self.skew:
            raise InvalidApproval("grant is issued in the future")
        if now >= claims.exp + self.skew:
            raise InvalidApproval("grant has expired")


def require_grant(grant: object) -> str:
    """The grant of an execute request; none at all is POLICY_DENIED (DESIGN.md: OpenClaw
    executes nothing without a grant), while a present but bad one is checked by
    `GrantVerifier.verify` and answers INVALID_APPROVAL."""
    if grant is None or grant == "":
        raise PolicyDenied("execution without a grant: ask EVA to decide first")
    if not isinstance(grant, str):
        raise InvalidApproval("grant is not a string")
    return grant


# --- the public key, as published by EVA -------------------------------------------------
def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The body of `GET /v1/grant-key`: an OKP JWK (RFC 8037) of the Ed25519 key."""
    return {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64url_encode(_raw_public(key))}


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_key(data: str | bytes | dict[str, Any]) -> Ed25519PublicKey:
    """EVA's public key from a JWK-style object, raw base64url (32 bytes) or PEM."""
    if isinstance(data, dict):
        x = data.get("x")
        if data.get("crv") != "Ed25519" or not isinstance(x, str):
            raise ConfigError("grant key is not an Ed25519 key (crv, x)", key="grant-key")
        text = x
    elif isinstance(data, bytes):
        text = data.decode("ascii", "replace")
    else:
        text = data
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError("grant key PEM is not an Ed25519 key", key="grant-key")
            return key
        raw = b64url_decode(text)
        if len(raw) != 32:
            raise ValueError(f"{len(raw)} bytes, not 32")
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ConfigError(f"grant key is unreadable: {exc}", key="grant-key") from exc
