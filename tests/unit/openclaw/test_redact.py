"""Secret redaction: each kind is found and replaced, ordinary text is left alone,
redacted JSON stays JSON, and logs pay little for it."""

from __future__ import annotations

import json
import logging
import re._constants as _constants
import re._parser as _parser
import sys
from typing import Any

import pytest

from sonia.redact import _PATTERNS, RedactingFilter, Redactor, default_redactor

SONIA_TOKEN = "Qm9vdHN0cmFwLXNlcnZpY2UtdG9rZW4tZXhhbXBsZQ"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98\nZm9vYmFy\n"
       "-----END RSA PRIVATE KEY-----")

CASES = [
    (PEM, "pem_private_key"),
    ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("ASIAY34FZKBOKMUTVV7A", "aws_access_key_id"),
    ("ghp_" + "a1B2" * 9, "github_token"),
    ("gho_" + "Zz09" * 9, "github_token"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_token"),
    ("sk-sonia-0123456789ab-" + "x" * 43, "sonia_key"),
    ("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv", "openai_key"),
    ("sk-" + "A1" * 24, "openai_key"),
    ("xoxb-1234567890-0987654321-AbCdEfGhIjKl", "slack_token"),
    ("xoxp-1234567890-abcdef", "slack_token"),
    ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "google_api_key"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "jwt"),
    (SONIA_TOKEN, "sonia_secret"),
]


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([SONIA_TOKEN, "short"])


@pytest.mark.parametrize(("secret", "kind"), CASES)
def test_each_kind_is_redacted_alone_and_in_text(
    redactor: Redactor, secret: str, kind: str,
) -> None:
    assert redactor.redact(secret) == f"[REDACTED:{kind}]"
    text = f"before {secret} after"
    assert redactor.redact(text) == f"before [REDACTED:{kind}] after"
    assert redactor.find(text) == [kind]


@pytest.mark.parametrize("header", ["OPENSSH PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY"])
def test_a_key_cut_off_before_its_end_is_redacted_to_the_end(
    redactor: Redactor, header: str,
) -> None:
    text = f"output:\n-----BEGIN {header}-----\nb3BlbnNzaC1rZXktdjEAAAA\nAAAABG5vbmUA"
    assert redactor.redact(text) == "output:\n[REDACTED:pem_private_key]"


@pytest.mark.parametrize(("text", "expected"), [
    ("password=hunter2hunter2", "password=[REDACTED:credential_assignment]"),
    ("DB_PASSWORD='correct horse battery'",
     "DB_PASSWORD='[REDACTED:credential_assignment]'"),
    ('{"client_secret": "abcdefgh12345678"}',
     '{"client_secret": "[REDACTED:credential_assignment]"}'),
    ("api_key: 0123456789abcdef", "api_key: [REDACTED:credential_assignment]"),
    ("token=ghp_" + "a1B2" * 9, "token=[REDACTED:github_token]"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws_secret_access_key = [REDACTED:aws_secret_access_key]"),
    ("Authorization: Bearer abc.DEF-123_ghi~jkl", "Authorization: Bearer [REDACTED:bearer_token]"),
    ("authorization: Basic dXNlcjpwYXNzd29yZA==",
     "authorization: Basic [REDACTED:bearer_token]"),
    ("curl -H 'Authorization: token 0123456789abcdef'",
     "curl -H 'Authorization: token [REDACTED:bearer_token]'"),
])
def test_only_the_value_of_an_assignment_is_replaced(
    redactor: Redactor, text: str, expected: str,
) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize("text", [
    "max_tokens=4096 token_count=1234567890",
    "password=short",
    "the token verification process and the bearer of bad news",
    "PWD=/home/user/projects/sonia",
    "task-abcdefghijklmnopqrstuvw",
    "scikit sk-learn-is-a-library-name",
    "a short literal is not a secret: short",
    "2024-01-01T00:00:00Z info request route=/v1/chat status=200 duration_ms=12",
    "[REDACTED:github_token] token=[REDACTED:credential_assignment]",
])
def test_ordinary_text_is_left_alone(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == text
    assert redactor.find(text) == []


def test_find_lists_kinds_in_order(redactor: Redactor) -> None:
    text = f"{SONIA_TOKEN} then AKIAIOSFODNN7EXAMPLE then password=abcdefgh9"
    assert redactor.find(text) == ["sonia_secret", "aws_access_key_id", "credential_assignment"]


def test_a_redacted_json_line_is_still_json(redactor: Redactor) -> None:
    entry = {
        "msg": 'config token="abcdefgh12345\\" rest',
        "key": PEM.split("-----END")[0],
        "headers": {"authorization": "Bearer " + "q" * 30},
        "secret": SONIA_TOKEN,
    }
    line = redactor.redact(json.dumps(entry))
    parsed = json.loads(line)
    assert SONIA_TOKEN not in line and "q" * 30 not in line and "MIIE" not in line
    assert parsed["key"] == "[REDACTED:pem_private_key]"
    assert parsed["secret"].startswith("[REDACTED:")


def test_redact_value_walks_containers(redactor: Redactor) -> None:
    value = {"a": [SONIA_TOKEN, 3, None], "b": ("x", SONIA_TOKEN), "c": {"d": SONIA_TOKEN}}
    assert redactor.redact_value(value) == {
        "a": ["[REDACTED:sonia_secret]", 3, None],
        "b": ("x", "[REDACTED:sonia_secret]"),
        "c": {"d": "[REDACTED:sonia_secret]"},
    }


def test_the_default_redactor_has_patterns_but_no_literals() -> None:
    assert default_redactor().redact(SONIA_TOKEN) == SONIA_TOKEN
    assert default_redactor().redact("AKIAIOSFODNN7EXAMPLE") == "[REDACTED:aws_access_key_id]"


def test_literals_with_regex_characters_are_literal() -> None:
    redactor = Redactor(["a.b*c+d?[e]^-\\f"])
    assert redactor.redact("x a.b*c+d?[e]^-\\f y") == "x [REDACTED:sonia_secret] y"
    assert redactor.redact("x aXbbbcd y") == "x aXbbbcd y"


def test_the_logging_filter_redacts_message_arguments_and_tracebacks(redactor: Redactor) -> None:
    record = logging.LogRecord("sonia", logging.ERROR, __file__, 1, "key %s", (SONIA_TOKEN,),
                               None)
    try:
        raise ValueError(f"bad {SONIA_TOKEN}")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter(redactor).filter(record) is True
    assert record.getMessage() == "key [REDACTED:sonia_secret]"
    assert record.exc_text and SONIA_TOKEN not in record.exc_text
    assert SONIA_TOKEN not in logging.Formatter().format(record)


def _repeat_problems(items: Any, inside: str | None = None) -> list[str]:
    """What makes a parsed pattern able to backtrack: a lazy repeat, an unbounded
    repeat that is not possessive, a repeat inside a repeat (an optional group,
    `{0,1}`, may hold one: it is tried at most twice)."""
    problems: list[str] = []
    for op, av in items:
        name = str(op)
        if name == "MIN_REPEAT":
            problems.append("lazy repeat")
        elif name in ("MAX_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = av
            unbounded = high == _constants.MAXREPEAT
            if unbounded and name != "POSSESSIVE_REPEAT":
                problems.append(f"unbounded repeat {{{low},}} that backtracks")
            if inside is not None:
                problems.append(f"repeat inside {inside}")
            problems += _repeat_problems(sub, "a repeat" if high > 1 else inside)
        elif name == "SUBPATTERN":
            problems += _repeat_problems(av[-1], inside)
        elif name == "BRANCH":
            for branch in av[1]:
                problems += _repeat_problems(branch, inside)
        elif name in ("ASSERT", "ASSERT_NOT"):
            problems += _repeat_problems(av[1], inside)
        elif name == "ATOMIC_GROUP":
            problems += _repeat_problems(av, inside)
    return problems


@pytest.mark.parametrize(("kind", "pattern"), _PATTERNS)
def test_finding_5_no_pattern_can_backtrack(kind: str, pattern: str) -> None:
    """Work is counted on the pattern itself, not on a clock: a pattern with no lazy
    repeat, no nested repeat and only possessive unbounded repeats gives back nothing it
    took, which is what made the `sk-` pattern quadratic (finding 5)."""
    assert _repeat_problems(_parser.parse(pattern)) == []


def test_the_backtracking_check_catches_the_old_key_pattern() -> None:
    """The rule above would have failed the pattern that froze the gateway."""
    old = r"\bsk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"
    assert _repeat_problems(_parser.parse(old))
    assert set(_repeat_problems(_parser.parse(r"(?:a+)+"))) == {
        "unbounded repeat {1,} that backtracks", "repeat inside a repeat"}
    assert _repeat_problems(_parser.parse(r"a+?")) == ["lazy repeat"]
    assert _repeat_problems(_parser.parse(r"(?:ab++)?c*+")) == []


N = 200_000


@pytest.mark.parametrize(("text", "expected"), [
    ("sk-" * N, "sk-" * N),
    ("sk-" * N + "7", "[REDACTED:openai_key]"),
    ("sk-" * N + " sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv",
     "sk-" * N + " [REDACTED:openai_key]"),
    ("a" * N + "@", "a" * N + "@"),
    ("QUJD" * N, "QUJD" * N),
    ("eyJ-" * N, "eyJ-" * N),
    ("eyJ-abc." * N, "eyJ-abc." * N),
    ("eyJ" + "a" * N + ".eyJbbbbb.sig", "[REDACTED:jwt]"),
    ("token" * N, "token" * N),
    ("token" + " " * N + "x", "token" + " " * N + "x"),
    ("password=" * N, "password=[REDACTED:credential_assignment]"),
    ('password="' + "a" * N, 'password="[REDACTED:credential_assignment]'),
    ("Bearer " * N, "Bearer " * N),
    ("authorization:" + " " * N, "authorization:" + " " * N),
    ("-----BEGIN PRIVATE KEY-----" * 1000, "[REDACTED:pem_private_key]"),
    ("-----BEGIN PRIVATE KEY-----" + "-" * N, "[REDACTED:pem_private_key]"),
    ("-----BEGIN " + "A" * N, "-----BEGIN " + "A" * N),
    ("ghp_" * N, "ghp_" * N),
    ("xoxb-" * N, "[REDACTED:slack_token]"),
])
def test_finding_4_adversarial_inputs_are_redacted_correctly(text: str, expected: str) -> None:
    """Inputs that made the old patterns quadratic (runs a pattern can start inside of
    at every step) give the right answer; at 200 k characters a quadratic pattern would
    not return within the suite's lifetime."""
    assert Redactor([SONIA_TOKEN]).redact(text) == expected


def test_finding_4_lone_surrogates_pass_through_and_secrets_around_them_do_not() -> None:
    text = "\ud800" * 1000 + " sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv \udfff" + SONIA_TOKEN
    redacted = Redactor([SONIA_TOKEN]).redact(text)
    assert redacted == ("\ud800" * 1000 + " [REDACTED:openai_key] \udfff"
                        "[REDACTED:sonia_secret]")
