"""Driving the console in a browser: one context per person, watching for dialogs and
content security policy violations, saving screenshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = Path(os.environ.get("SONIA_SCREENSHOTS")
                   or ROOT / "artifacts" / "console-screenshots")
EXPECT_TIMEOUT_MS = 20_000
"""How long an expectation waits for its condition (a loaded 2-core machine is slow)."""

WATCH_PAGE = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sample}`);
});
"""
"""Runs before the page's own script: keeps every CSP violation the browser reports."""


class Console:
    """One browser context on the console: a page, its dialogs and CSP violations."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url,
                                           viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(EXPECT_TIMEOUT_MS)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.add_init_script(WATCH_PAGE)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self, page: str = "") -> None:
        self.page.goto(f"/#{page}" if page else "/")

    def sign_in(self, key: str) -> None:
        from playwright.sync_api import expect

        self.open()
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("heading", name="Chat", level=1)).to_be_visible()

    def go(self, page: str, heading: str) -> None:
        """Follow the navigation link to `page`, as a person would."""
        from playwright.sync_api import expect

        self.page.get_by_role("navigation", name="Pages").get_by_role(
            "link", name=heading).click()
        expect(self.page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        assert self.page.url.endswith(f"#{page}")

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__violations || []")
        return found

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()
