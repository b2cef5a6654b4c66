"""Adversarial cases against execution grants, sent straight to OpenClaw's /v1/execute.

They use the gateway's own service token, so they get past service auth and
meet the grant checks themselves: an attacker who owns the gateway still cannot
run anything EVA did not sign for exactly this tool and these arguments, once.

Grants come three ways: real ones minted by EVA (asked as the gateway would),
forgeries signed with a key generated here, and crafted claims signed with
EVA's real private key, read from the fresh home this gate owns. The last kind
isolates one binding at a time (expiry, audience, tool, arguments, lifetime):
the signature is genuine, so only the check under test can refuse it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sonia.actions.grants import b64url_encode
from sonia.actions.plan import canonical_json, plan_hash
from sonia.gates.security.probe import Observed, Probe, sign_grant
from sonia.gates.security.types import Case

__all__ = ["GRANT_CASES"]

TOOL = "file.read"
ARGS: dict[str, Any] = {"path": "notes.txt"}
CONCURRENT_USES = 8


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16), "action_id": f"act_{secrets.token_hex(12)}",
        "tool": TOOL, "plan_hash": plan_hash(TOOL, ARGS), "aud": "openclaw",
        "iat": now, "exp": now + 30,
    }
    claims.update(changes)
    return claims


def _flip(text: str, index: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    char = text[index]
    replacement = alphabet[(alphabet.index(char) + 1) % len(alphabet)]
    return text[:index] + replacement + text[index + 1:]


def no_grant(p: Probe) -> Observed:
    return p.execute(TOOL, ARGS, omit_grant=True)[1]


def empty_grant(p: Probe) -> Observed:
    return p.execute(TOOL, ARGS, "")[1]


def non_string_grant(p: Probe) -> Observed:
    return p.execute(TOOL, ARGS, {"alg": "none"})[1]


def random_grant(p: Probe) -> Observed:
    return p.execute(TOOL, ARGS, secrets.token_urlsafe(120))[1]


def truncated_grant(p: Probe) -> Observed:
    grant = p.eva_grant(TOOL, ARGS)
    return p.execute(TOOL, ARGS, grant[:-10])[1]


def flipped_signature(p: Probe) -> Observed:
    grant = p.eva_grant(TOOL, ARGS)
    return p.execute(TOOL, ARGS, _flip(grant, len(grant) - 20))[1]


def flipped_payload(p: Probe) -> Observed:
    grant = p.eva_grant(TOOL, ARGS)
    head, payload, signature = grant.split(".")
    return p.execute(TOOL, ARGS, f"{head}.{_flip(payload, 10)}.{signature}")[1]


def other_key(p: Probe) -> Observed:
    forged = sign_grant(_claims(), Ed25519PrivateKey.generate())
    return p.execute(TOOL, ARGS, forged)[1]


def hmac_confusion(p: Probe) -> Observed:
    """HS256 keyed with EVA's public key: the classic algorithm confusion."""
    public = p.grant_private_key().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    head = b64url_encode(canonical_json({"alg": "HS256", "typ": "sonia-grant"}))
    payload = b64url_encode(canonical_json(_claims()))
    mac = hmac.new(public, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return p.execute(TOOL, ARGS, f"{head}.{payload}.{b64url_encode(mac)}")[1]


def alg_none(p: Probe) -> Observed:
    head = b64url_encode(canonical_json({"alg": "none", "typ": "sonia-grant"}))
    payload = b64url_encode(canonical_json(_claims()))
    return p.execute(TOOL, ARGS, f"{head}.{payload}.")[1]


def padded_base64(p: Probe) -> Observed:
    grant = p.eva_grant(TOOL, ARGS)
    head, payload, signature = grant.split(".")
    padded = base64.urlsafe_b64encode(base64.urlsafe_b64decode(payload + "==")).decode()
    return p.execute(TOOL, ARGS, f"{head}.{padded}.{signature}")[1]


def _real(p: Probe, **changes: Any) -> Observed:
    return p.execute(TOOL, ARGS, sign_grant(_claims(**changes), p.grant_private_key()))[1]


def expired(p: Probe) -> Observed:
    now = int(time.time())
    return _real(p, iat=now - 600, exp=now - 300)


def issued_in_future(p: Probe) -> Observed:
    now = int(time.time())
    return _real(p, iat=now + 600, exp=now + 630)


def too_long_lived(p: Probe) -> Observed:
    now = int(time.time())
    return _real(p, iat=now, exp=now + 86_400)


def other_audience(p: Probe) -> Observed:
    return _real(p, aud="gateway")


def extra_claim(p: Probe) -> Observed:
    claims = _claims()
    claims["admin"] = True
    return p.execute(TOOL, ARGS, sign_grant(claims, p.grant_private_key()))[1]


def real_key_wrong_header(p: Probe) -> Observed:
    header = {"alg": "EdDSA", "typ": "sonia-grant", "kid": "other"}
    return p.execute(TOOL, ARGS, sign_grant(_claims(), p.grant_private_key(), header))[1]


def other_tool_same_args(p: Probe) -> Observed:
    grant = p.eva_grant("file.list", {"path": "."})
    return p.execute("file.search", {"path": "."}, grant)[1]


def other_tool_crafted(p: Probe) -> Observed:
    """A genuine signature for file.read, presented for file.delete with the same args."""
    grant = sign_grant(_claims(), p.grant_private_key())
    return p.execute("file.delete", ARGS, grant)[1]


def same_tool_other_args(p: Probe) -> Observed:
    grant = p.eva_grant(TOOL, ARGS)
    return p.execute(TOOL, {"path": "secrets.txt"}, grant)[1]


def same_tool_extra_arg(p: Probe) -> Observed:
    grant = p.eva_grant("file.list", {"path": "."})
    return p.execute("file.list", {"path": ".", "extra": 1}, grant)[1]


def replayed(p: Probe) -> Observed:
    grant = p.eva_grant(TOOL, ARGS)
    first, first_seen = p.execute(TOOL, ARGS, grant)
    again = p.execute(TOOL, ARGS, grant)[1]
    again.extra["first_use"] = first.status_code
    if first.status_code != 200:
        again.ok = False
        again.note = f"the first use answered {first.status_code}, not 200: {first_seen.body}"
    return again


def concurrent_uses(p: Probe) -> Observed:
    """One grant, presented by several requests at the same instant: exactly one runs."""
    grant = p.eva_grant(TOOL, ARGS)
    barrier = Barrier(CONCURRENT_USES, timeout=30)

    def use(_: int) -> Observed:
        barrier.wait()
        return p.execute(TOOL, ARGS, grant)[1]

    with ThreadPoolExecutor(CONCURRENT_USES) as pool:
        outcomes = list(pool.map(use, range(CONCURRENT_USES)))
    winners = [o for o in outcomes if o.status == 200]
    losers = [o for o in outcomes if o.status != 200]
    shown = losers[0] if losers else outcomes[0]
    shown.extra["statuses"] = sorted(o.status for o in outcomes)
    wrong = [o for o in losers if (o.status, o.code) != (401, "INVALID_APPROVAL")]
    if len(winners) != 1 or wrong or not all(o.ok for o in outcomes):
        shown.ok = False
        shown.note = (f"{len(winners)} of {CONCURRENT_USES} uses executed (want exactly 1); "
                      f"other answers {[(o.status, o.code) for o in losers]}")
    return shown


def grant_from_other_caller(p: Probe) -> Observed:
    """A real grant, presented by a service that may not call /v1/execute (voice)."""
    grant = p.eva_grant(TOOL, ARGS)
    return p.execute(TOOL, ARGS, grant, caller="voice")[1]


_G = "grants"
GRANT_CASES: tuple[Case, ...] = (
    Case("grant-none", _G, "no grant field at all", 403, "POLICY_DENIED", no_grant),
    Case("grant-empty", _G, "an empty grant", 403, "POLICY_DENIED", empty_grant),
    Case("grant-not-a-string", _G, "a JSON object as grant", 401, "INVALID_APPROVAL",
         non_string_grant),
    Case("grant-random", _G, "random base64url text", 401, "INVALID_APPROVAL", random_grant),
    Case("grant-truncated", _G, "a real grant cut short", 401, "INVALID_APPROVAL",
         truncated_grant),
    Case("grant-bit-flipped-signature", _G, "a real grant, one signature character changed",
         401, "INVALID_APPROVAL", flipped_signature),
    Case("grant-bit-flipped-payload", _G, "a real grant, one payload character changed",
         401, "INVALID_APPROVAL", flipped_payload),
    Case("grant-other-key", _G, "claims signed by a key generated by the attacker",
         401, "INVALID_APPROVAL", other_key),
    Case("grant-hmac-confusion", _G, "HS256 over the claims keyed with EVA's public key",
         401, "INVALID_APPROVAL", hmac_confusion),
    Case("grant-alg-none", _G, "alg none, empty signature", 401, "INVALID_APPROVAL", alg_none),
    Case("grant-padded-base64", _G, "a real grant re-encoded with base64 padding",
         401, "INVALID_APPROVAL", padded_base64),
    Case("grant-expired", _G, "EVA's real key, exp 5 minutes ago", 401, "INVALID_APPROVAL",
         expired),
    Case("grant-issued-in-future", _G, "EVA's real key, iat 10 minutes ahead",
         401, "INVALID_APPROVAL", issued_in_future),
    Case("grant-too-long-lived", _G, "EVA's real key, a 24 hour lifetime",
         401, "INVALID_APPROVAL", too_long_lived),
    Case("grant-other-audience", _G, "EVA's real key, aud gateway", 401, "INVALID_APPROVAL",
         other_audience),
    Case("grant-extra-claim", _G, "EVA's real key, an extra claim admin=true",
         401, "INVALID_APPROVAL", extra_claim),
    Case("grant-other-header", _G, "EVA's real key, a header with a kid",
         401, "INVALID_APPROVAL", real_key_wrong_header),
    Case("grant-other-tool-same-args", _G, "a real file.list grant used for file.search",
         401, "INVALID_APPROVAL", other_tool_same_args),
    Case("grant-other-tool-crafted", _G, "EVA's real key, a file.read grant used for "
         "file.delete with the same args", 401, "INVALID_APPROVAL", other_tool_crafted),
    Case("grant-same-tool-other-args", _G, "a real grant for notes.txt used for secrets.txt",
         401, "INVALID_APPROVAL", same_tool_other_args),
    Case("grant-same-tool-extra-arg", _G, "a real grant used with one more argument",
         401, "INVALID_APPROVAL", same_tool_extra_arg),
    Case("grant-replayed", _G, "a real grant used a second time", 401, "INVALID_APPROVAL",
         replayed),
    Case("grant-concurrent-uses", _G, f"one real grant sent by {CONCURRENT_USES} requests at "
         "once: exactly one executes", 401, "INVALID_APPROVAL", concurrent_uses),
    Case("grant-from-other-service", _G, "a real grant presented with the voice token",
         403, "FORBIDDEN", grant_from_other_caller),
)
