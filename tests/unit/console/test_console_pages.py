"""The console's files: served by the gateway from the package, with a strict content
security policy on every answer, and written so that nothing from the API can ever be
parsed as HTML."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sonia.home import Home
from sonia.services.gateway.security_headers import CONTENT_SECURITY_POLICY
from sonia.testing import in_process

CONSOLE = files("sonia") / "console"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = Home.at(tmp_path_factory.mktemp("home"))
    home.init(base_port=17000)
    with in_process("gateway", home) as client:
        yield client


def test_the_page_is_served_at_the_root_with_the_safety_headers(gateway: TestClient) -> None:
    page = gateway.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "Sign in" in page.text


def test_the_policy_allows_no_inline_script_no_eval_and_no_framing() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert directives["require-trusted-types-for"] == "'script'"


@pytest.mark.parametrize(("name", "media_type"), [
    ("console.js", "text/javascript; charset=utf-8"),
    ("console.css", "text/css; charset=utf-8"),
    ("icon.svg", "image/svg+xml"),
])
def test_its_files_are_served_with_their_types(gateway: TestClient, name: str,
                                               media_type: str) -> None:
    answer = gateway.get(f"/console/{name}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == media_type
    assert answer.content == (CONSOLE / name).read_bytes()


@pytest.mark.parametrize("name", ["nothing.js", "..%2Fconsole.py", "index.html", "%2e%2e"])
def test_any_other_name_is_not_found(gateway: TestClient, name: str) -> None:
    answer = gateway.get(f"/console/{name}")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


def test_api_answers_carry_the_policy_too(gateway: TestClient) -> None:
    answer = gateway.get("/v1/whoami")
    assert answer.status_code == 401
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.handlers: list[str] = []
        self.styles: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"{tag}.{name}" for name, _ in attrs if name.startswith("on")]
        self.styles += [tag for name, _ in attrs if name == "style"]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
        if tag == "style":
            self.styles.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        self.inline_script = self.inline_script or (self._in_script and bool(data.strip()))


def test_the_page_has_no_inline_script_handler_or_style() -> None:
    markup = _Markup()
    markup.feed((CONSOLE / "index.html").read_text())
    assert markup.scripts == [{"src": "/console/console.js", "defer": None}]
    assert not markup.inline_script and markup.handlers == [] and markup.styles == []


def test_the_script_never_parses_text_as_html() -> None:
    """Every value from the API reaches the page through textContent; these are the
    ways a script turns a string into markup or code."""
    source = (CONSOLE / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setTimeout(\"", "setInterval(\"", "DOMParser",
                 "createContextualFragment", "srcdoc", "javascript:"):
        assert sink not in source, sink


def test_the_files_ship_in_the_package() -> None:
    pyproject = tomllib.loads(
        (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert "console/*" in pyproject["tool"]["setuptools"]["package-data"]["sonia"]
