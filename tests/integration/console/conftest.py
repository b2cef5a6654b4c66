"""Fixtures of the console's browser tests: a real stack whose home holds gate runs and a
release bundle, and headless Chromium (Debian's `chromium`) driven by Playwright.

Each test opens its own browser context (its own cookies) through `open_console`;
every page records the dialogs that fire and the content security policy violations
the browser reports, so a test can say that none did. Screenshots go to
`artifacts/console-screenshots/` at the top of the checkout (ignored by git), or to
`$SONIA_SCREENSHOTS`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from console_evidence import Artifacts, write_artifacts
from console_helpers import EXPECT_TIMEOUT_MS, Console

from sonia.testing import FreshStack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("missing system package: chromium (headless browser for the console "
                    "tests; `make system-deps` installs it as root with apt)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[FreshStack, Artifacts]]:
    """A running stack whose artifacts hold three gate runs and a release bundle."""
    with FreshStack(tmp_path_factory.mktemp("console-home")) as stack:
        runs = write_artifacts(stack.home.artifacts, tmp_path_factory.mktemp("release-keys"))
        stack.up()
        yield stack, runs


@pytest.fixture()
def open_console(browser: Any, console_stack: tuple[FreshStack, Artifacts]
                 ) -> Iterator[Callable[[], Console]]:
    """Opens consoles (separate browser contexts) and closes them after the test."""
    opened: list[Console] = []

    def make() -> Console:
        made = Console(browser, console_stack[0].url("gateway"))
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()
