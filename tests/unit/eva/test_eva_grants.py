"""Execution grants: only EVA's key mints them, and each binds one tool, one plan, one audience,
one short window. Every forged, altered or misused grant is INVALID_APPROVAL; no grant at all
is POLICY_DENIED."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sonia.actions.grants import (
    AUDIENCE,
    GrantSigner,
    GrantVerifier,
    b64url_decode,
    b64url_encode,
    load_public_key,
    public_key_jwk,
    public_key_pem,
    require_grant,
)
from sonia.actions.plan import plan_hash
from sonia.errors import ConfigError, InvalidApproval, PolicyDenied

NOW = 1_750_000_000
TOOL = "file.read"
ARGS: dict[str, Any] = {"path": "notes/today.txt"}


@pytest.fixture()
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def signer(key: Ed25519PrivateKey) -> GrantSigner:
    return GrantSigner(key, ttl=30)


@pytest.fixture()
def verifier(key: Ed25519PrivateKey) -> GrantVerifier:
    return GrantVerifier(key.public_key())


@pytest.fixture()
def token(signer: GrantSigner) -> str:
    return signer.mint("act_1", TOOL, plan_hash(TOOL, ARGS), now=NOW)[0]


def _claims(**changes: Any) -> dict[str, Any]:
    claims = {"jti": "j1", "action_id": "act_1", "tool": TOOL,
              "plan_hash": plan_hash(TOOL, ARGS), "aud": AUDIENCE, "iat": NOW, "exp": NOW + 30}
    claims.update(changes)
    return claims


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _forge(key: Ed25519PrivateKey, header: dict[str, Any] | bytes,
           payload: dict[str, Any] | bytes) -> str:
    """A token with any header and payload, correctly signed by `key`."""
    h = header if isinstance(header, bytes) else _compact(header)
    p = payload if isinstance(payload, bytes) else _compact(payload)
    signing_input = f"{b64url_encode(h)}.{b64url_encode(p)}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


def _rejected(verifier: GrantVerifier, token: object, *, tool: str = TOOL,
              args: dict[str, Any] | None = None, now: float = NOW) -> str:
    with pytest.raises(InvalidApproval) as caught:
        verifier.verify(token, tool=tool, args=ARGS if args is None else args, now=now)
    assert caught.value.status == 401 and caught.value.code == "INVALID_APPROVAL"
    return caught.value.detail


GOOD_HEADER = {"alg": "EdDSA", "typ": "sonia-grant"}


def test_a_minted_grant_verifies_for_its_tool_and_args(
        signer: GrantSigner, verifier: GrantVerifier) -> None:
    token, claims = signer.mint("act_1", TOOL, plan_hash(TOOL, ARGS), now=NOW)
    assert verifier.verify(token, tool=TOOL, args=ARGS, now=NOW + 5) == claims
    assert claims.aud == "openclaw" and claims.exp - claims.iat == 30
    assert claims.action_id == "act_1" and len(claims.jti) >= 22


def test_the_token_has_the_documented_shape(token: str) -> None:
    header, payload, signature = token.split(".")
    assert json.loads(b64url_decode(header)) == GOOD_HEADER
    assert set(json.loads(b64url_decode(payload))) == {
        "jti", "action_id", "tool", "plan_hash", "aud", "iat", "exp"}
    assert len(b64url_decode(signature)) == 64
    assert "=" not in token


def test_every_grant_has_a_new_jti(signer: GrantSigner) -> None:
    jtis = {signer.mint("a", TOOL, plan_hash(TOOL, ARGS))[1].jti for _ in range(50)}
    assert len(jtis) == 50


def test_argument_key_order_does_not_matter(token: str, verifier: GrantVerifier) -> None:
    args = {"b": 1, "a": [1, 2], "path": "x"}
    reordered = {"path": "x", "a": [1, 2], "b": 1}
    signer_token = GrantSigner(Ed25519PrivateKey.generate())
    other = GrantVerifier(signer_token.public_key)
    grant, _ = signer_token.mint("a", TOOL, plan_hash(TOOL, args), now=NOW)
    other.verify(grant, tool=TOOL, args=reordered, now=NOW)


def test_no_grant_at_all_is_policy_denied() -> None:
    for missing in (None, ""):
        with pytest.raises(PolicyDenied) as caught:
            require_grant(missing)
        assert caught.value.status == 403 and caught.value.code == "POLICY_DENIED"
    assert require_grant("a.b.c") == "a.b.c"
    with pytest.raises(InvalidApproval):
        require_grant(123)


_RANDOM = random.Random(2026)
"""Fixed, so every run (and every test worker) collects the same test ids."""


def _token(size: int) -> str:
    return base64.urlsafe_b64encode(_RANDOM.randbytes(size)).rstrip(b"=").decode()


@pytest.mark.parametrize("garbage", [
    "x", "a.b", "a.b.c", "a.b.c.d", "..", "...", " . . ", "null", "{}",
    _token(64), ".".join(_token(40) for _ in range(3)),
    "eyJhbGciOiJFZERTQSJ9.e30." + "A" * 86,
])
def test_random_strings_are_rejected(verifier: GrantVerifier, garbage: str) -> None:
    _rejected(verifier, garbage)


@pytest.mark.parametrize("not_a_string", [None, 1, b"a.b.c", ["a", "b", "c"], {"grant": 1}])
def test_non_strings_are_rejected(verifier: GrantVerifier, not_a_string: object) -> None:
    _rejected(verifier, not_a_string)


def test_truncated_grants_are_rejected(token: str, verifier: GrantVerifier) -> None:
    header, payload, _ = token.split(".")
    for cut in (token[:-1], token[:-2], token[: len(token) // 2], f"{header}.{payload}",
                f"{header}.{payload}.", token[1:]):
        _rejected(verifier, cut)


def test_a_bit_flipped_payload_fails_the_signature(
        token: str, verifier: GrantVerifier) -> None:
    header, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(payload))
    for position in (0, len(raw) // 2, len(raw) - 2):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        detail = _rejected(verifier, f"{header}.{b64url_encode(bytes(flipped))}.{signature}")
        assert "signature" in detail


def test_a_bit_flipped_signature_fails(token: str, verifier: GrantVerifier) -> None:
    header, payload, signature = token.split(".")
    raw = b64url_decode(signature)
    for position in range(0, 64, 7):
        flipped = bytearray(raw)
        flipped[position] ^= 0x80
        detail = _rejected(verifier, f"{header}.{payload}.{b64url_encode(bytes(flipped))}")
        assert "signature" in detail


def test_a_grant_signed_by_another_key_fails(verifier: GrantVerifier) -> None:
    mallory = GrantSigner(Ed25519PrivateKey.generate())
    forged, _ = mallory.mint("act_1", TOOL, plan_hash(TOOL, ARGS), now=NOW)
    assert "signature" in _rejected(verifier, forged)


def test_alg_none_is_rejected(verifier: GrantVerifier, key: Ed25519PrivateKey) -> None:
    header = b64url_encode(json.dumps({"alg": "none", "typ": "sonia-grant"}).encode())
    payload = b64url_encode(json.dumps(_claims()).encode())
    _rejected(verifier, f"{header}.{payload}.")
    _rejected(verifier, f"{header}.{payload}.{'A' * 86}")
    # even correctly signed by EVA's own key, a header other than the one EVA writes fails
    detail = _rejected(verifier, _forge(key, {"alg": "none", "typ": "sonia-grant"}, _claims()))
    assert "header" in detail


def test_hs256_with_the_public_key_as_hmac_secret_is_rejected(
        verifier: GrantVerifier, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    secrets_tried = [
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public_key_pem(public).encode(),
        public_key_jwk(public)["x"].encode(),
    ]
    header = b64url_encode(json.dumps({"alg": "HS256", "typ": "sonia-grant"}).encode())
    payload = b64url_encode(json.dumps(_claims()).encode())
    for secret in secrets_tried:
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        _rejected(verifier, f"{header}.{payload}.{b64url_encode(mac)}")
        # padded out to the length of an Ed25519 signature, it still fails the signature
        padded = b64url_encode(mac + mac)
        assert "signature" in _rejected(verifier, f"{header}.{payload}.{padded}")


@pytest.mark.parametrize("header", [
    {"alg": "EdDSA"},
    {"alg": "EdDSA", "typ": "JWT"},
    {"alg": "EdDSA", "typ": "sonia-grant", "kid": "../../etc/passwd"},
    {"alg": "EdDSA", "typ": "sonia-grant", "jku": "http://127.0.0.1/keys"},
    {"alg": "EdDSA", "typ": "sonia-grant", "crit": ["exp"]},
    {"alg": "ES256", "typ": "sonia-grant"},
    {"alg": "RS256", "typ": "sonia-grant"},
    {"alg": "eddsa", "typ": "sonia-grant"},
    {"typ": "sonia-grant", "alg": "EdDSA"},  # same content, other spelling
])
def test_any_other_header_is_rejected_even_when_signed_by_eva(
        verifier: GrantVerifier, key: Ed25519PrivateKey, header: dict[str, Any]) -> None:
    assert "header" in _rejected(verifier, _forge(key, header, _claims()))


def test_a_tampered_header_fails_the_signature(token: str, verifier: GrantVerifier) -> None:
    _, payload, signature = token.split(".")
    other = b64url_encode(json.dumps({"alg": "EdDSA", "typ": "sonia-grant", "x": 1}).encode())
    assert "signature" in _rejected(verifier, f"{other}.{payload}.{signature}")


def test_an_expired_grant_is_rejected(token: str, verifier: GrantVerifier) -> None:
    verifier.verify(token, tool=TOOL, args=ARGS, now=NOW + 30)  # within the skew
    assert "expired" in _rejected(verifier, token, now=NOW + 30 + verifier.skew)
    assert "expired" in _rejected(verifier, token, now=NOW + 86_400)


def test_a_grant_from_the_future_is_rejected(token: str, verifier: GrantVerifier) -> None:
    assert "future" in _rejected(verifier, token, now=NOW - verifier.skew - 1)


def test_a_long_lived_grant_is_rejected(
        verifier: GrantVerifier, key: Ed25519PrivateKey) -> None:
    forged = _forge(key, GOOD_HEADER, _claims(exp=NOW + 3600))
    assert "lifetime" in _rejected(verifier, forged)
    backwards = _forge(key, GOOD_HEADER, _claims(exp=NOW - 1))
    assert "before" in _rejected(verifier, backwards)


def test_a_grant_for_another_audience_is_rejected(
        verifier: GrantVerifier, key: Ed25519PrivateKey) -> None:
    for audience in ("gateway", "eva", "OPENCLAW", ""):
        _rejected(verifier, _forge(key, GOOD_HEADER, _claims(aud=audience)))
    assert "audience" in _rejected(verifier, _forge(key, GOOD_HEADER, _claims(aud="gateway")))


def test_a_grant_for_another_tool_with_the_same_args_is_rejected(
        token: str, verifier: GrantVerifier) -> None:
    assert "tool" in _rejected(verifier, token, tool="file.delete")


def test_a_grant_for_the_same_tool_with_other_args_is_rejected(
        token: str, verifier: GrantVerifier) -> None:
    for args in ({"path": "notes/other.txt"}, {"path": "notes/today.txt", "extra": 1}, {},
                 {"path": "notes/today.txt "}):
        assert "plan_hash" in _rejected(verifier, token, args=args)


@pytest.mark.parametrize("claims", [
    _claims(extra="x"),
    {k: v for k, v in _claims().items() if k != "jti"},
    _claims(iat="1750000000"),
    _claims(exp=float(NOW + 30)),
    _claims(iat=True),
    _claims(tool=None),
    _claims(jti=""),
    _claims(plan_hash="ABC"),
    _claims(plan_hash=plan_hash(TOOL, ARGS).upper()),
])
def test_malformed_claims_are_rejected_even_when_signed(
        verifier: GrantVerifier, key: Ed25519PrivateKey, claims: dict[str, Any]) -> None:
    _rejected(verifier, _forge(key, GOOD_HEADER, claims))


def test_duplicate_claim_keys_are_rejected(
        verifier: GrantVerifier, key: Ed25519PrivateKey) -> None:
    body = json.dumps(_claims())[:-1] + ', "tool": "shell.run"}'
    _rejected(verifier, _forge(key, GOOD_HEADER, body.encode()))
    _rejected(verifier, _forge(key, GOOD_HEADER, b"[1, 2]"))
    _rejected(verifier, _forge(key, GOOD_HEADER, b'{"iat": NaN}'))
    _rejected(verifier, _forge(key, GOOD_HEADER, b"\xff\xfe"))


def test_non_canonical_base64_is_rejected(token: str, verifier: GrantVerifier) -> None:
    header, payload, signature = token.split(".")
    variants = [f"{header}=.{payload}.{signature}", f"{header}.{payload}==.{signature}",
                f"{header} .{payload}.{signature}", f"{header}.{payload}.{signature}\n",
                f"{header}.{payload}.{signature[:-1]}{chr(ord(signature[-1]) + 1)}"]
    for segment in (payload, signature):
        standard = base64.b64encode(b64url_decode(segment)).decode().rstrip("=")
        if standard != segment:  # the standard alphabet (+ /) is not base64url
            variants.append(token.replace(segment, standard))
    for variant in variants:
        _rejected(verifier, variant)


def test_an_oversized_grant_is_rejected(verifier: GrantVerifier) -> None:
    assert "longer" in _rejected(verifier, "A" * 5000)


def test_the_signature_is_checked_before_the_claims(
        verifier: GrantVerifier) -> None:
    mallory = Ed25519PrivateKey.generate()
    assert "signature" in _rejected(verifier, _forge(mallory, GOOD_HEADER, _claims(aud="x")))


def test_the_public_key_round_trips_through_every_published_form(
        key: Ed25519PrivateKey, token: str) -> None:
    public = key.public_key()
    jwk = public_key_jwk(public)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["alg"] == "EdDSA"
    for form in (jwk, jwk["x"], public_key_pem(public), public_key_pem(public).encode()):
        GrantVerifier(load_public_key(form)).verify(token, tool=TOOL, args=ARGS, now=NOW)


@pytest.mark.parametrize("bad", [
    {"crv": "X25519", "x": "AAAA"}, {"crv": "Ed25519"}, "AAAA", "not base64!",
    "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
])
def test_unreadable_public_keys_are_config_errors(bad: Any) -> None:
    with pytest.raises(ConfigError):
        load_public_key(bad)


def test_a_signer_refuses_an_unbounded_ttl(key: Ed25519PrivateKey) -> None:
    for ttl in (0, -1, 301, 86_400):
        with pytest.raises(ValueError):
            GrantSigner(key, ttl=ttl)
