"""Secret scanning and redaction, for tool output and for every log line.

A `Redactor` replaces each secret it recognises with `[REDACTED:<kind>]`:

    sonia_secret           a literal given to the constructor (service tokens, keys)
    pem_private_key        a PEM private key block, also when cut off before its END
    aws_access_key_id      AKIA/ASIA/... key ids
    aws_secret_access_key  the value of an `aws_secret_access_key = ...` assignment
    github_token           ghp_/gho_/ghu_/ghs_/ghr_ tokens and github_pat_ tokens
    sonia_key              Sonia user keys, `sk-sonia-<id>-<secret>`
    openai_key             `sk-...` keys
    slack_token            xoxa/xoxb/xoxp/xoxo/xoxr/xoxs tokens
    google_api_key         AIza... keys
    jwt                    three base64url parts, header and payload JSON (`eyJ...`)
    bearer_token           the credential of an Authorization header, or after `Bearer`
    credential_assignment  the value (8+ characters) of `password=`, `secret: `,
                           `token=`, `api_key=`, ... in text, env files or JSON

For assignments and auth headers only the value is replaced, so a reader still sees
which setting held a secret; a value that is itself a known kind of token is named
by that kind. All patterns form one compiled alternation, scanned
once per text. The replacement has no quote and no backslash and a match never
ends inside an escape, so a redacted JSON line is still valid JSON (the log
formatter redacts the rendered line).

Linear time. Redaction runs on untrusted text (tool output, every log line) while
holding the GIL, so a pattern that backtracks is a denial of service: one 150 KB
body once blocked a service for half a minute. Every pattern here obeys three rules,
checked by `tests/unit/openclaw/test_redact.py` on the compiled patterns: no lazy
repeat, no repeat inside a repeat (but an optional group), and every unbounded
repeat possessive, so no repeat gives back what it took. A fourth rule keeps the
scan from restarting inside a run: an unbounded repeat that a later element can
still fail after starts only at the start of its run (the JWT's lookbehind; the
whitespace after a keyword, which cannot be keyword), and the `sk-` key takes its
run whole and checks for a digit afterwards (`_is_secret`) instead of looking ahead.
`bench/redact.py` measures seconds per MiB of adversarial input from 1 to 10 MiB.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from sonia.errors import describe_exception

__all__ = ["MIN_LITERAL_CHARS", "RedactingFilter", "Redactor", "default_redactor"]

MIN_LITERAL_CHARS = 8
"""Shorter literals are not redacted: they would blank out ordinary words."""

_KEYWORDS = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|auth[_-]?token|credentials?"
)

# (kind, pattern). Order matters where two could match at one position: first wins.
# Kinds whose pattern has groups `<kind>_keep` keep that part and replace the rest.
#
# Every pattern is linear by construction (see the module docstring, "Linear time"):
# no lazy and no nested repeats, every unbounded repeat possessive (`*+`, `++`,
# `{n,}+`), and an unbounded repeat that can still be followed by a failing element
# starts only where its run starts (a lookbehind excluding its class, or a
# preceding character outside it), so no run is scanned from many starts.
_TOKEN = "A-Za-z0-9_-"
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("pem_private_key",
     r"-----BEGIN [ A-Z0-9]{0,40}PRIVATE KEY-----(?:[^\"-]|-(?!----END))*+"
     r"(?:-----END [ A-Z0-9]{0,40}PRIVATE KEY-----)?"),
    ("aws_access_key_id",
     r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    ("aws_secret_access_key",
     r"(?P<aws_secret_access_key_keep>(?i:aws_?secret_?(?:access_?)?key)(?:\\?[\"'])?\s*+"
     r"[:=]\s*+(?:\\?[\"'])?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
    ("sonia_key", rf"\bsk-sonia-[0-9a-f]{{12}}-[{_TOKEN}]{{16,}}+"),
    # A key needs a digit somewhere in it; `_keep_match` checks that after the run is
    # taken whole (a lookahead here would rescan the run from every `sk-` inside it).
    ("openai_key", rf"\bsk-[{_TOKEN}]{{20,}}+"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}+"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("jwt", rf"(?<![{_TOKEN}])eyJ[{_TOKEN}]{{5,}}+\.eyJ[{_TOKEN}]{{5,}}+\.[{_TOKEN}]*+"),
    ("bearer_token",
     r"(?P<bearer_token_keep>(?i:\bauthorization(?:\\?[\"'])?\s*+[:=]\s*+(?:\\?[\"'])?"
     r"(?:(?:bearer|basic|token|digest)\s++)?|\bbearer\s++))"
     r"(?!\[REDACTED)[A-Za-z0-9._~+/-]{12,}+=*+"),
    ("credential_assignment",
     rf"(?P<credential_assignment_keep>(?i:{_KEYWORDS})(?:\\?[\"'])?\s*+[:=]\s*+"
     r"(?:\\?[\"'])?)(?!\[REDACTED|gh[pousr]_|github_pat_|sk-|xox|AIza|eyJ|AKIA|ASIA)"
     r"(?:[^\s\"'\\&;,<>]{8,}+|(?<=[\"'])[^\"'\\\n]{8,}+(?=\\?[\"']))"),
)

_ASSIGNMENT_KINDS = frozenset(
    kind for kind, pattern in _PATTERNS if f"(?P<{kind}_keep>" in pattern
)


_FIRST_CHARS = "-AaBbCcEeGgPpSsTtXx"
"""Every character a pattern above can start with; the combined regex looks for one
first, which makes it about three times faster on ordinary text."""

_TRIGGERS = (
    "private key", "akia", "asia", "aida", "aroa", "agpa", "anpa", "anva", "aipa", "abia",
    "acca", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "xox", "aiza", "eyj",
    "bearer", "authorization", "passw", "passphrase", "secret", "token", "key",
    "credential",
)
"""Lower-case substrings, at least one of which is in any text a pattern matches: text
without them (most log lines) is returned after a few substring searches."""


def _alternation(words: list[str]) -> re.Pattern[str]:
    branches = []
    first = _FIRST_CHARS
    if words:
        branches.append("(?P<sonia_secret>" + "|".join(re.escape(w) for w in words) + ")")
        first += "".join(sorted({w[0] for w in words}))
    branches.extend(f"(?P<{kind}>{pattern})" for kind, pattern in _PATTERNS)
    first_class = "".join("\\" + c if c in "\\]^-[" else c for c in first)
    return re.compile(f"(?=[{first_class}])(?:" + "|".join(branches) + ")")


def _is_secret(kind: str, match: re.Match[str]) -> bool:
    """The checks a linear pattern cannot make: an `sk-` key holds a digit.

    The pattern takes the whole run, so a run without a digit is left as it is and
    the scan goes on after it, as a lookahead would have found for every `sk-` in it."""
    if kind == "openai_key":
        return any(c.isdigit() for c in match.group())
    return True


class Redactor:
    """Finds and replaces secrets in text; build once, use from any thread."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._literals = sorted(
            {w for w in secrets if len(w) >= MIN_LITERAL_CHARS}, key=len, reverse=True)
        self._regex = _alternation(self._literals)

    def _may_contain(self, text: str) -> bool:
        lowered = text.lower()
        return any(t in lowered for t in _TRIGGERS) or any(w in text for w in self._literals)

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup or "secret"
        if not _is_secret(kind, match):
            return match.group()
        marker = f"[REDACTED:{kind}]"
        if kind in _ASSIGNMENT_KINDS:
            return (match.group(f"{kind}_keep") or "") + marker
        return marker

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by `[REDACTED:<kind>]`."""
        if not self._may_contain(text):
            return text
        return self._regex.sub(self._replace, text)

    def find(self, text: str) -> list[str]:
        """The kind of each secret in `text`, in order of appearance."""
        if not self._may_contain(text):
            return []
        return [match.lastgroup or "secret" for match in self._regex.finditer(text)
                if _is_secret(match.lastgroup or "secret", match)]

    def redact_value(self, value: Any) -> Any:
        """`value` with every string in it redacted (dicts, lists and tuples walked)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_value(item) for item in value)
        return value


_DEFAULT = Redactor()


def default_redactor() -> Redactor:
    """A redactor with the patterns only (no literals), shared."""
    return _DEFAULT


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message and string arguments in place.

    Attach it to a handler when a formatter cannot redact its rendered line itself.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Type and frames only: an exception's message may hold a request body.
            record.exc_text = describe_exception(record.exc_info[1])
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        return True
