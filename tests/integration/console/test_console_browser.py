"""The console in a real browser (headless Chromium), against a real stack.

A person signs in with a key, chats and watches the reply stream in, sees a write the
model or they themselves proposed wait in Approvals with its plan and diff, approves
it (an approver) and finds the file written; a user key has no approve button and the
route refuses it anyway. Payloads in a chat message, a memory, a file name and tool
output stay text: no dialog fires and the browser reports no policy violation. Every
action can be reached with the keyboard alone, and axe-core finds no serious or
critical accessibility violation on any page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_evidence import Artifacts
from console_helpers import Console

from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
"""axe-core 4.14.1 (`npm pack axe-core@4.14.1`, package/axe.min.js)."""

Open = Callable[[], Console]
Stack = tuple[FreshStack, Artifacts]

PAGES = [("chat", "Chat"), ("approvals", "Approvals"), ("memory", "Memory"),
         ("sessions", "Sessions"), ("system", "System"), ("gates", "Gates and releases"),
         ("audit", "Audit"), ("keys", "Keys")]


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def api(stack: FreshStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url("gateway"), timeout=60,
                        headers={"Authorization": f"Bearer {key}"})


def card(console: Console, action_id: str) -> Any:
    return console.page.locator(f"#pending-list [data-action='{action_id}']")


def send(console: Console, message: str) -> Any:
    """Type a chat message, send it, and wait for its reply to be complete."""
    page = console.page
    replies = page.locator("#chat-log .msg.assistant")
    before = replies.count()
    page.get_by_label("Message").fill(message)
    page.get_by_role("button", name="Send").click()
    reply = replies.nth(before)
    expect(reply.locator(".provider")).to_be_visible()
    return reply


# ------------------------------------------------------------------ chat and approvals

def test_sign_in_and_chat_with_a_streamed_reply(console_stack: Stack, open_console: Open) -> None:
    stack, _ = console_stack
    console = open_console()
    console.sign_in(stack.home.create_api_key("user"))
    page = console.page
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/stream")) as streamed:
        first = send(console, "my favourite mountain is the Matterhorn")
    assert streamed.value.headers["content-type"].startswith("text/event-stream")
    expect(first.locator(".text")).to_contain_text("Matterhorn")
    expect(first.locator(".provider")).to_contain_text("answered by builtin")
    second = send(console, "which mountain is my favourite?")
    expect(second.locator("details.recalled summary")).to_have_text("Recalled 1 memory")
    second.locator("details.recalled summary").click()
    expect(second.locator("details.recalled li")).to_contain_text(
        ["my favourite mountain is the Matterhorn"])
    console.screenshot("chat")
    assert console.dialogs == [] and console.violations() == []


def test_a_write_the_model_proposes_is_approved_in_the_console_and_written(
        console_stack: Stack, open_console: Open) -> None:
    stack, _ = console_stack
    user = open_console()
    user.sign_in(stack.home.create_api_key("user"))
    reply = send(user, "write hello from the console to console-notes.txt")
    pending = reply.locator(".inline-approval")
    expect(pending).to_contain_text("Waiting for an approver: file.write")
    expect(pending.get_by_role("button", name="Approve")).to_have_count(0)
    action_id = pending.get_attribute("data-action")

    approver = open_console()
    approver.sign_in(stack.approver_key)
    approver.go("approvals", "Approvals")
    shown = card(approver, action_id)
    expect(shown).to_contain_text("proposed by the model")
    expect(shown.locator(".diff")).to_contain_text("+hello from the console")
    expect(shown.locator(".hash")).to_contain_text("(matches the plan)")
    plan = shown.locator(".plan").inner_text()
    assert hashlib.sha256(plan.encode()).hexdigest() in shown.locator(".hash").inner_text()
    approver.screenshot("approvals")
    target = stack.home.workspace / "console-notes.txt"
    assert not target.exists()
    shown.get_by_role("button", name="Approve").click()
    expect(shown.locator(".result")).to_contain_text("Approved: executed")
    assert target.read_text() == "hello from the console"
    for console in (user, approver):
        assert console.dialogs == [] and console.violations() == []


def test_a_user_sees_their_own_proposal_with_no_approve_button_and_the_route_refuses(
        console_stack: Stack, open_console: Open) -> None:
    stack, _ = console_stack
    key = stack.home.create_api_key("user")
    with api(stack, key) as client:
        proposed = client.post("/v1/actions", json={
            "tool": "file.write", "args": {"path": "user-proposed.txt", "content": "mine"}})
    action_id = proposed.json()["id"]
    console = open_console()
    console.sign_in(key)
    console.go("approvals", "Approvals")
    shown = card(console, action_id)
    expect(shown).to_contain_text("proposed by a person")
    expect(shown).to_contain_text("An approver decides on this action.")
    expect(shown.get_by_role("button")).to_have_count(0)
    csrf = console.page.evaluate(
        "async () => (await (await fetch('/v1/console/session')).json()).csrf_token")
    refused = console.page.request.post(f"/v1/actions/{action_id}/approve",
                                        headers={"X-CSRF-Token": csrf})
    assert (refused.status, refused.json()["code"]) == (403, "FORBIDDEN")
    assert not (stack.home.workspace / "user-proposed.txt").exists()
    assert console.dialogs == [] and console.violations() == []


def test_an_approver_approves_from_the_chat_and_the_turn_resumes(
        console_stack: Stack, open_console: Open) -> None:
    stack, _ = console_stack
    console = open_console()
    console.sign_in(stack.approver_key)
    reply = send(console, "write resumed to resumed.txt")
    reply.locator(".inline-approval").get_by_role("button", name="Approve").click()
    expect(reply.locator(".inline-approval")).to_contain_text("executed")
    assert (stack.home.workspace / "resumed.txt").read_text() == "resumed"
    expect(reply.locator(".text")).not_to_contain_text("Waiting for an approver")


# ------------------------------------------------------------------ memory, sessions, evidence

def test_a_memory_is_found_viewed_and_forgotten(console_stack: Stack,
                                                open_console: Open) -> None:
    stack, _ = console_stack
    key = stack.home.create_api_key("user")
    console = open_console()
    console.sign_in(key)
    console.go("memory", "Memory")
    page = console.page
    page.get_by_label("Text to remember").fill("my favourite bird is the kingfisher")
    page.get_by_role("button", name="Remember").click()
    expect(page.locator("#status")).to_contain_text("Remembered")
    page.get_by_label("Search your memories").fill("kingfisher")
    page.get_by_role("button", name="Search").click()
    found = page.locator("#memory-results li.memory")
    expect(found).to_have_count(1)
    memory_id = found.get_attribute("data-memory")
    found.get_by_role("button", name="View memory").click()
    expect(page.locator("#memory-detail")).to_contain_text(str(memory_id))
    console.screenshot("memory")
    found.get_by_role("button", name="Forget memory").click()
    page.get_by_role("button", name="Confirm forget").click()
    expect(page.locator("#status")).to_have_text("Forgotten.")
    expect(found).to_have_count(0)
    with api(stack, key) as client:
        assert client.get(f"/v1/memory/{memory_id}").status_code == 404


def test_open_sessions_are_listed_and_closed(console_stack: Stack, open_console: Open) -> None:
    stack, _ = console_stack
    key = stack.home.create_api_key("user")
    with api(stack, key) as client:
        session_id = client.post("/v1/sessions", json={"mode": "text"}).json()["id"]
    console = open_console()
    console.sign_in(key)
    console.go("sessions", "Sessions")
    close = console.page.get_by_role("button", name=f"Close session {session_id}")
    console.screenshot("sessions")
    close.click()
    expect(console.page.locator("#status")).to_contain_text(f"Session {session_id} closed")
    expect(close).to_have_count(0)
    with api(stack, key) as client:
        assert client.get(f"/v1/sessions/{session_id}").json()["state"] == "closed"


def test_system_audit_and_keys_pages_show_the_stack(console_stack: Stack,
                                                    open_console: Open) -> None:
    stack, _ = console_stack
    doomed = stack.home.create_api_key("user")
    console = open_console()
    console.sign_in(stack.approver_key)
    page = console.page
    console.go("system", "System")
    rows = page.locator("#services tbody tr")
    expect(rows).to_have_count(6)
    expect(page.locator("#services tbody .ok")).to_have_count(6)
    expect(page.locator("#system-facts")).to_contain_text("Audit chain")
    expect(page.locator("#system-facts")).to_contain_text("intact")
    console.screenshot("system")
    console.go("audit", "Audit")
    expect(page.locator("#audit-chain")).to_contain_text("The audit chain is intact")
    console.screenshot("audit")
    console.go("keys", "Keys")
    doomed_id = doomed.split("-")[2]
    page.get_by_role("button", name=f"Revoke key {doomed_id}").click()
    page.get_by_role("button", name=f"Confirm revoking key {doomed_id}").click()
    expect(page.locator("#status")).to_contain_text(f"Key {doomed_id} revoked")
    console.screenshot("keys")
    with api(stack, doomed) as client:
        assert client.get("/v1/whoami").status_code == 401


def test_gate_runs_plots_and_release_bundles_are_shown(console_stack: Stack,
                                                       open_console: Open) -> None:
    stack, runs = console_stack
    console = open_console()
    console.sign_in(stack.approver_key)
    console.go("gates", "Gates and releases")
    page = console.page
    table = page.locator("#runs tbody tr")
    expect(table).to_have_count(3)
    expect(table.nth(0)).to_contain_text(runs.soak.name)
    expect(page.locator("#runs tbody tr", has_text=runs.go.name)).to_contain_text("GO")
    expect(page.locator("#runs tbody tr", has_text=runs.no_go.name)).to_contain_text("NO-GO")
    release = page.locator("#releases .release")
    expect(release).to_contain_text("release-candidate-1")
    expect(release).to_contain_text("soak.duration_s = 60: no 48 h machine for a console test")
    expect(release).to_contain_text("qa: Quinn QA")
    expect(release).to_contain_text("does not verify")  # signed with a key nobody pinned
    page.get_by_role("button", name=f"Details of {runs.soak.name}").click()
    expect(page.locator("#run-checks tbody tr").first).to_be_visible()
    plots = page.locator("#run-plots img")
    expect(plots).to_have_count(5)
    for index in range(5):
        plots.nth(index).scroll_into_view_if_needed()
        expect(plots.nth(index)).to_have_js_property("complete", True)
        assert plots.nth(index).evaluate("img => img.naturalWidth") > 100
    console.screenshot("gates")
    assert console.dialogs == [] and console.violations() == []


# ------------------------------------------------------------------ safety

PAYLOADS = {
    "chat": "<img src=x onerror=alert('chat')>",
    "memory": "<svg onload=alert('memory')></svg>",
    "name": "<img src=x onerror=alert('name')>.txt",
    "output": "<script>alert('output')</script><iframe src=javascript:alert('frame')>",
}


def test_payloads_in_chat_memory_file_names_and_tool_output_stay_text(
        console_stack: Stack, open_console: Open) -> None:
    """An approver's console, because the second read follows tool output in the session
    (the injection rule makes it wait for a person): the tool output then comes back
    through the resumed turn too."""
    stack, _ = console_stack
    folder = stack.home.workspace / "xss"
    folder.mkdir()
    (folder / PAYLOADS["name"]).write_text("named\n")
    (folder / "page.html").write_text(PAYLOADS["output"])
    key = stack.home.create_api_key("approver")
    console = open_console()
    console.sign_in(key)
    page = console.page
    listed = send(console, "list my files in xss")
    expect(listed.locator(".text")).to_contain_text(PAYLOADS["name"])
    shown = send(console, "read xss/page.html")
    shown.locator(".inline-approval").get_by_role("button", name="Approve").click()
    expect(shown.locator(".text")).to_contain_text(PAYLOADS["output"])
    send(console, f"remember that I said {PAYLOADS['chat']}")
    expect(page.locator("#chat-log .msg.user").last).to_have_text(
        f"Youremember that I said {PAYLOADS['chat']}")
    with api(stack, key) as client:
        client.post("/v1/memory", json={"content": f"my motto is {PAYLOADS['memory']}"})
        proposed = client.post("/v1/actions", json={"tool": "file.write", "args": {
            "path": f"xss/{PAYLOADS['name']}", "content": PAYLOADS["output"]}}).json()
    recalled = send(console, "what is my motto?")
    expect(recalled.locator("details.recalled")).to_contain_text(PAYLOADS["memory"])
    console.go("memory", "Memory")
    page.get_by_label("Search your memories").fill("motto")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#memory-results")).to_contain_text(PAYLOADS["memory"])
    console.go("approvals", "Approvals")
    pending = card(console, proposed["id"])
    expect(pending.locator(".plan")).to_contain_text(PAYLOADS["name"])
    expect(pending.locator(".diff")).to_contain_text(PAYLOADS["output"])
    pending.get_by_role("button", name="Approve").click()
    expect(pending.locator(".result")).to_contain_text("executed")
    console.screenshot("payloads")
    assert page.locator("img[src='x'], svg[onload], iframe, main script").count() == 0
    assert console.dialogs == []
    assert console.violations() == []


def tab_order(console: Console) -> tuple[int, set[str]]:
    """Mark every visible control of the page, then press Tab around it: how many
    controls there are, and which were reached."""
    page = console.page
    count: int = page.evaluate("""() => {
        const controls = [...document.querySelectorAll(
            'a[href], button, input, select, textarea, summary')]
          .filter((e) => !e.disabled && e.getClientRects().length > 0
                         && getComputedStyle(e).visibility !== 'hidden');
        controls.forEach((e, i) => e.setAttribute('data-kb', String(i)));
        return controls.length; }""")
    reached: set[str] = set()
    for _ in range(2 * count + 4):
        page.keyboard.press("Tab")
        marker = page.evaluate("() => document.activeElement.getAttribute('data-kb')")
        if marker is not None:
            reached.add(marker)
    return count, reached


def press_tab_until(console: Console, accessible: str, limit: int = 200) -> None:
    """Tab until the focused control's name is `accessible` (a link may add a count)."""
    for _ in range(limit):
        console.page.keyboard.press("Tab")
        focused = console.page.evaluate("""() => { const e = document.activeElement;
            const label = e.labels && e.labels.length ? e.labels[0].textContent : null;
            return (e.getAttribute('aria-label') || label || e.textContent).trim(); }""")
        if focused == accessible or focused.startswith(accessible + " "):
            return
    raise AssertionError(f"Tab never reached {accessible!r}")


def test_the_keyboard_alone_reaches_and_works_every_action(console_stack: Stack,
                                                           open_console: Open) -> None:
    stack, runs = console_stack
    with api(stack, stack.user_key) as client:
        proposed = client.post("/v1/actions", json={"tool": "file.write", "args": {
            "path": "keyboard.txt", "content": "typed"}}).json()
        client.post("/v1/memory", json={"content": "my keyboard is a model M"})
    with api(stack, stack.approver_key) as client:
        client.post("/v1/memory", json={"content": "my keyboard is a model F"})
        client.post("/v1/sessions", json={"mode": "text"})
    console = open_console()
    page = console.page
    console.open()
    count, reached = tab_order(console)
    assert len(reached) == count, "the sign-in page"
    press_tab_until(console, "API key")
    page.keyboard.type(stack.approver_key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Chat", level=1)).to_be_visible()
    page.keyboard.type("hello there")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#chat-log .provider")).to_have_count(1)
    press_tab_until(console, "Approvals")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Approvals", level=1)).to_be_visible()
    expect(card(console, proposed["id"])).to_be_visible()
    for _ in range(100):  # past the Approve buttons of other cards, to this action's
        press_tab_until(console, "Approve")
        if page.evaluate("() => document.activeElement.closest('[data-action]').dataset.action"
                         ) == proposed["id"]:
            break
    page.keyboard.press("Enter")
    expect(card(console, proposed["id"]).locator(".result")).to_contain_text("executed")
    assert (stack.home.workspace / "keyboard.txt").read_text() == "typed"
    for name, heading in PAGES:
        press_tab_until(console, heading)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        if name == "memory":
            press_tab_until(console, "Search your memories")
            page.keyboard.type("keyboard")
            page.keyboard.press("Enter")
            expect(page.locator("#memory-results li.memory")).to_have_count(1)
        if name == "gates":
            press_tab_until(console, f"Details of {runs.soak.name}")
            page.keyboard.press("Enter")
            expect(page.locator("#run-plots img")).to_have_count(5)
        if name == "sessions":
            expect(page.locator("#sessions tbody tr").first).to_be_visible()
        count, reached = tab_order(console)
        assert len(reached) == count, f"page {name}: {count - len(reached)} unreachable"
    assert console.dialogs == [] and console.violations() == []


# ------------------------------------------------------------------ accessibility

def axe_source() -> str:
    data = AXE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == AXE_SHA256, "the vendored axe-core changed"
    return data.decode("utf-8")


def serious_violations(console: Console, source: str) -> list[str]:
    page = console.page
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(source)
    found: list[list[Any]] = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ['violations']});
        return result.violations
          .filter((v) => v.impact === 'serious' || v.impact === 'critical')
          .map((v) => [v.id, v.impact, v.nodes.map((n) => n.target.join(' ')).slice(0, 3)]);
    }""")
    return [f"{rule} ({impact}): {', '.join(nodes)}" for rule, impact, nodes in found]


def test_axe_finds_no_serious_or_critical_violation_on_any_page(
        console_stack: Stack, open_console: Open) -> None:
    stack, runs = console_stack
    source = axe_source()
    with api(stack, stack.approver_key) as client:
        client.post("/v1/actions", json={"tool": "file.write", "args": {
            "path": "axe.txt", "content": "a\nb\n"}})
        client.post("/v1/memory", json={"content": "my screen reader is Orca"})
        client.post("/v1/sessions", json={"mode": "text"})
    console = open_console()
    console.open()
    expect(console.page.get_by_role("heading", name="Sign in to Sonia")).to_be_visible()
    console.screenshot("sign-in")
    problems = {"sign-in": serious_violations(console, source)}
    console.sign_in(stack.approver_key)
    send(console, "my screen reader is Orca")
    send(console, "write accessible to axe-chat.txt")
    page = console.page
    for name, heading in PAGES:
        console.go(name, heading)
        if name == "approvals":
            expect(page.locator("#pending-list .card .preview h4").first).to_be_visible()
        if name == "memory":
            page.get_by_label("Search your memories").fill("Orca")
            page.get_by_role("button", name="Search").click()
            expect(page.locator("#memory-results li.memory").first).to_be_visible()
        if name == "gates":
            page.get_by_role("button", name=f"Details of {runs.soak.name}").click()
            expect(page.locator("#run-plots img")).to_have_count(5)
            expect(page.locator("#releases .release")).to_have_count(1)
        if name == "system":
            expect(page.locator("#services tbody tr")).to_have_count(6)
        if name == "audit":
            expect(page.locator("#audit tbody tr").first).to_be_visible()
        problems[name] = serious_violations(console, source)
    assert {page: found for page, found in problems.items() if found} == {}
