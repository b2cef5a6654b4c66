"""The adversarial suite: every case the security gate (and `make test`) runs live.

    service-auth  missing, wrong, other service's, query-string and user-key tokens
    grants        (security_grants) forged, altered, expired, rebound, replayed, raced
    approvals     user keys approving, deciding twice, deciding decided actions
    commands      shell syntax, wrappers, interpreters, dangerous flags, odd bytes
    paths         traversal, absolute, encoded, NUL, siblings, links, FIFOs, /proc,
                  protected names
    secrets       tool output redacted; no credential in any log
    sockets       every listening socket of the stack is on loopback
    repositories  (security_repos) hostile git config and attributes, bare repos,
                  a repository above the workspace
    exfiltration  (security_reads) links through cwd and after --, recursive reads
                  of protected names, protected names created by mkdir/cp
    robustness    (security_robustness) lone surrogates on every route, /livez
                  stalls under adversarial bodies, per-key fairness, not root

Configuration refusals (`config_cases`) are one more category; the gate runs
them against broken copies of a home. Every case is judged by its answer, its
leaks and its effects on disk and processes (`security_effects`).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from sonia import SERVICES
from sonia.gates.security.grants import GRANT_CASES
from sonia.gates.security.probe import Observed, Probe, read_logs
from sonia.gates.security.reads import READ_CASES
from sonia.gates.security.repos import REPO_CASES
from sonia.gates.security.robustness import ROBUSTNESS_CASES
from sonia.gates.security.types import Case
from sonia.supervisor import control

__all__ = ["CASES", "LATE_CASES", "categories"]

Attempt = Callable[[Probe], Observed]
EXECUTE = "/v1/execute"


# --- service auth -------------------------------------------------------------------------
def _execute_with(headers: Callable[[Probe], dict[str, str]],
                  params: Callable[[Probe], dict[str, str]] | None = None) -> Attempt:
    def attempt(p: Probe) -> Observed:
        return p.request("POST", "openclaw", EXECUTE, headers=headers(p),
                         params=params(p) if params else None,
                         json_body={"tool": "file.read", "args": {"path": "notes.txt"}})[1]
    return attempt


def _eva(path: str, caller: str | None, body: dict[str, Any]) -> Attempt:
    def attempt(p: Probe) -> Observed:
        headers = p.service(caller) if caller else {}
        return p.request("POST", "eva", path, headers=headers, json_body=body)[1]
    return attempt


_PROPOSAL = {"tool": "file.read", "args": {"path": "notes.txt"}, "principal": "gate:security"}
_EXECUTED = {"jti": "x" * 22, "outcome": "ok", "result_digest": "0" * 64}
_ZERO_ID = "act_" + "0" * 24

_S = "service-auth"
SERVICE_AUTH: tuple[Case, ...] = (
    Case("auth-missing-token", _S, "OpenClaw /v1/execute without X-Service-Token",
         401, "UNAUTHENTICATED", _execute_with(lambda p: {})),
    Case("auth-wrong-token", _S, "a well-formed token nobody holds", 401, "UNAUTHENTICATED",
         _execute_with(lambda p: {"X-Service-Token": "A" * 43})),
    Case("auth-other-service-token", _S, "the memory service's token on /v1/execute",
         403, "FORBIDDEN", _execute_with(lambda p: p.service("memory"))),
    Case("auth-token-in-query", _S, "the gateway's token in the query string, not the header",
         401, "UNAUTHENTICATED",
         _execute_with(lambda p: {}, lambda p: {"X-Service-Token": p.stack.token("gateway"),
                                               "token": p.stack.token("gateway")})),
    Case("auth-user-key-as-token", _S, "a user API key presented as a service token",
         401, "UNAUTHENTICATED", _execute_with(lambda p: {"X-Service-Token": p.stack.user_key})),
    Case("auth-token-as-bearer", _S, "a service token as a bearer key at the gateway",
         401, "UNAUTHENTICATED",
         lambda p: p.act("file.read", {"path": "notes.txt"},
                         headers={"Authorization": f"Bearer {p.stack.token('gateway')}"})[1]),
    Case("auth-no-user-key", _S, "POST /v1/actions without a key", 401, "UNAUTHENTICATED",
         lambda p: p.act("file.read", {"path": "notes.txt"}, headers={"X-None": "1"})[1]),
    Case("auth-openclaw-proposes", _S, "OpenClaw's token asking EVA for a decision",
         403, "FORBIDDEN", _eva("/v1/decisions", "openclaw", _PROPOSAL)),
    Case("auth-gateway-reports-execution", _S, "the gateway's token reporting an execution",
         403, "FORBIDDEN", _eva(f"/v1/decisions/{_ZERO_ID}/executed", "gateway", _EXECUTED)),
    Case("auth-voice-approves", _S, "the voice token approving at EVA", 403, "FORBIDDEN",
         _eva(f"/v1/decisions/{_ZERO_ID}/approve", "voice", {"approver": "key:x"})),
    Case("auth-approve-no-token", _S, "EVA approve without a token", 401, "UNAUTHENTICATED",
         _eva(f"/v1/decisions/{_ZERO_ID}/approve", None, {"approver": "key:x"})),
    Case("auth-memory-from-openclaw", _S, "OpenClaw's token on memory's search",
         403, "FORBIDDEN",
         lambda p: p.request("GET", "memory", "/v1/memories/search",
                             headers=p.service("openclaw"), params={"q": "x"})[1]),
)


# --- approvals --------------------------------------------------------------------------
def _write_args(name: str) -> dict[str, Any]:
    return {"path": f"approvals/{name}.txt", "content": f"{name}\n", "parents": True}


def user_approves(p: Probe) -> Observed:
    return p.decide("approve", p.pending("file.write", _write_args("user")),
                    headers=p.user())[1]


def user_denies(p: Probe) -> Observed:
    return p.decide("deny", p.pending("file.write", _write_args("user-deny")),
                    headers=p.user())[1]


def approve_twice(p: Probe) -> Observed:
    name = "twice"
    action = p.pending("file.write", {**_write_args(name), "mode": "append"})
    first, first_seen = p.decide("approve", action)
    p.set_up_done()  # the first approval's write is the action's own; the second must add none
    second = p.decide("approve", action)[1]
    content = (p.workspace / "approvals" / f"{name}.txt").read_text()
    second.extra["file_content"] = content
    if first.status_code != 200 or content != f"{name}\n":
        second.ok = False
        second.note = (f"first approval answered {first.status_code} ({first_seen.body}); "
                       f"file holds {content!r} (must be written exactly once)")
    return second


def approve_denied(p: Probe) -> Observed:
    action = p.pending("file.write", _write_args("denied"))
    p.decide("deny", action)
    seen = p.decide("approve", action)[1]
    if (p.workspace / "approvals" / "denied.txt").exists():
        seen.ok, seen.note = False, "a denied action ran"
    return seen


def deny_executed(p: Probe) -> Observed:
    action = p.pending("file.write", _write_args("executed"))
    p.decide("approve", action)
    p.set_up_done()
    return p.decide("deny", action)[1]


def approve_tier0(p: Probe) -> Observed:
    response, _ = p.act("file.read", {"path": "notes.txt"})
    return p.decide("approve", str(response.json()["id"]))[1]


def approve_concurrently(p: Probe) -> Observed:
    action = p.pending("file.write", {**_write_args("race"), "mode": "append"})
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: p.decide("approve", action)[1], range(4)))
    winners = [o for o in outcomes if o.status == 200]
    losers = [o for o in outcomes if o.status != 200]
    shown = losers[0] if losers else outcomes[0]
    content = (p.workspace / "approvals" / "race.txt").read_text()
    shown.extra["statuses"] = sorted(o.status for o in outcomes)
    if len(winners) != 1 or content != "race\n" or any(
            (o.status, o.code) != (409, "ALREADY_DECIDED") for o in losers):
        shown.ok = False
        shown.note = f"{len(winners)} approvals won; file holds {content!r}"
    return shown


def other_user_views(p: Probe) -> Observed:
    action = p.pending("file.write", _write_args("private"))
    return p.request("GET", "gateway", f"/v1/actions/{action}",
                     headers={"Authorization": f"Bearer {p.other_user_key}"})[1]


_A = "approvals"
APPROVALS: tuple[Case, ...] = (
    Case("approve-with-user-key", _A, "a user key approving a pending write", 403, "FORBIDDEN",
         user_approves),
    Case("deny-with-user-key", _A, "a user key denying a pending write", 403, "FORBIDDEN",
         user_denies),
    Case("approve-twice", _A, "approving an executed action again: 409, the write ran once",
         409, "ALREADY_DECIDED", approve_twice),
    Case("approve-denied", _A, "approving a denied action", 409, "ALREADY_DECIDED",
         approve_denied),
    Case("deny-executed", _A, "denying an executed action", 409, "ALREADY_DECIDED",
         deny_executed),
    Case("approve-tier0-executed", _A, "approving a tier-0 action that already ran",
         409, "ALREADY_DECIDED", approve_tier0),
    Case("approve-concurrently", _A, "four approvals of one action at once: one runs",
         409, "ALREADY_DECIDED", approve_concurrently, may_write=("approvals/race.txt",)),
    Case("approve-unknown", _A, "approving an action that does not exist", 404, "NOT_FOUND",
         lambda p: p.decide("approve", _ZERO_ID)[1]),
    Case("approve-malformed-id", _A, "approving an id with path tricks", 404, "NOT_FOUND",
         lambda p: p.decide("approve", "act_..%2f..%2fv1")[1]),
    Case("approve-without-key", _A, "approving without any key", 401, "UNAUTHENTICATED",
         lambda p: p.decide("approve", _ZERO_ID, headers={"X-None": "1"})[1]),
    Case("view-other-users-action", _A, "another user's key reading a pending action",
         404, "NOT_FOUND", other_user_views),
)


# --- commands ------------------------------------------------------------------------------
def _run(argv: Any, cwd: str | None = None) -> Attempt:
    def attempt(p: Probe) -> Observed:
        args: dict[str, Any] = {"argv": argv}
        if cwd is not None:
            args["cwd"] = cwd
        response, seen = p.act("shell.run", args)
        if response.status_code == 200:
            result = response.json().get("result", {})
            output = f"{result.get('stdout', '')}{result.get('stderr', '')}"
            seen.extra["exit_code"] = result.get("exit_code")
            if "uid=" in output or "gid=" in output:
                seen.ok, seen.note = False, "the output shows that `id` ran"
        return seen
    return attempt


def _literal(case_id: str, argv: list[str], what: str) -> Case:
    """A payload that reaches the binary only as a literal argument (nothing else runs)."""
    return Case(case_id, "commands", f"{what}: runs {argv[0]} with a literal argument",
                200, None, _run(argv))


def _refused(case_id: str, argv: Any, what: str, code: str = "INVALID_COMMAND",
             status: int = 400) -> Case:
    return Case(case_id, "commands", what, status, code, _run(argv))


COMMANDS: tuple[Case, ...] = (
    _refused("cmd-shell-string", ["ls -la; id"], "a shell command line as argv[0]"),
    _refused("cmd-argv-as-string", "ls -la", "argv given as a string", "INVALID_ARGUMENT"),
    _refused("cmd-subshell", ["$(id)"], "$() as the command"),
    _refused("cmd-backticks", ["`id`"], "backticks as the command"),
    _refused("cmd-ifs", ["cat${IFS}/etc/passwd"], "${IFS} word splitting"),
    _refused("cmd-quoting", ["'l's"], "quotes around the name"),
    _refused("cmd-bash-c", ["bash", "-c", "id"], "bash -c"),
    _refused("cmd-sh-c", ["sh", "-c", "id"], "sh -c"),
    _refused("cmd-env-rm", ["env", "rm", "-rf", "."], "env running rm"),
    _refused("cmd-xargs", ["xargs", "rm"], "xargs"),
    _refused("cmd-timeout-wrapper", ["timeout", "1", "id"], "timeout as a wrapper"),
    _refused("cmd-sudo", ["sudo", "ls"], "sudo"),
    _refused("cmd-python-c", ["python3", "-c", "print(1)"], "interpreter -c"),
    _refused("cmd-perl-e", ["perl", "-e", "print 1"], "perl -e"),
    _refused("cmd-find-exec", ["find", ".", "-exec", "id", ";"], "find -exec"),
    _refused("cmd-find-delete", ["find", ".", "-delete"], "find -delete"),
    _refused("cmd-git-c", ["git", "-c", "core.pager=id", "log"], "git -c"),
    _refused("cmd-git-output", ["git", "diff", "--output=x"], "git diff --output"),
    _refused("cmd-abbreviated-flag", ["ls", "--almost"], "an abbreviated long flag"),
    _refused("cmd-unknown-flag", ["ls", "-Z"], "a flag outside the allowlist"),
    _refused("cmd-grep-f", ["grep", "-f", "secrets.txt", "x"], "grep -f (patterns from a file)"),
    _refused("cmd-dash-operand", ["cat", "-"], "'-' as an operand (standard input)"),
    _refused("cmd-dash-prefixed-operand", ["cat", "-/etc/passwd"], "an operand starting with -"),
    _refused("cmd-nul", ["ls", "a\x00b"], "a NUL byte in an argument"),
    _refused("cmd-newline", ["ls", "a\nb"], "a newline in an argument"),
    _refused("cmd-escape-sequence", ["ls", "\x1b[31m"], "a terminal escape sequence"),
    _refused("cmd-bidi-override", ["ls", "\u202eexe.txt"], "a right-to-left override"),
    _refused("cmd-not-allowlisted", ["id"], "a binary outside the allowlist"),
    _refused("cmd-curl", ["curl", "http://127.0.0.1:9"], "a network tool"),
    _refused("cmd-dot-slash", ["./ls"], "./ls"),
    _refused("cmd-absolute-shell", ["/bin/sh"], "an absolute path to a shell"),
    _refused("cmd-absolute-allowlisted", ["/usr/bin/ls"], "an absolute path, even to ls"),
    _refused("cmd-absolute-operand", ["cat", "/etc/passwd"], "an absolute operand"),
    _refused("cmd-dotdot-operand", ["cat", "../canary.txt"], "a ../ operand"),
    _refused("cmd-symlink-operand", ["cat", "link-out"], "an operand that is a symlink "
             "out of the workspace", "SYMLINK_DENIED", 403),
    _refused("cmd-hardlink-operand", ["cat", "hard"], "an operand hard-linked to an outside "
             "file", "PATH_OUTSIDE_SANDBOX", 403),
    _refused("cmd-protected-operand", ["cat", ".env"], "an operand naming a protected file",
             "POLICY_DENIED", 403),
    Case("cmd-cwd-outside", "commands", "a working directory above the workspace",
         403, "PATH_OUTSIDE_SANDBOX", _run(["ls"], cwd="..")),
    _literal("cmd-semicolon-argument", ["ls", ";", "id"], "a ; between arguments"),
    _literal("cmd-pipe-argument", ["cat", "notes.txt", "|", "id"], "a | between arguments"),
    _literal("cmd-subshell-argument", ["ls", "$(id)"], "$() as an argument"),
    _literal("cmd-backtick-argument", ["ls", "`id`"], "backticks as an argument"),
)


# --- paths ---------------------------------------------------------------------------------
def _read(path: str, tool: str = "file.read", **more: Any) -> Attempt:
    return lambda p: p.act(tool, {"path": path, **more})[1]


def _approved(tool: str, args: dict[str, Any]) -> Attempt:
    """Propose a tier 2-3 action and approve it: the refusal comes at execution."""
    def attempt(p: Probe) -> Observed:
        return p.decide("approve", p.pending(tool, args))[1]
    return attempt


def search_skips_links(p: Probe) -> Observed:
    response, seen = p.act("file.search", {"query": "SONIA-CANARY", "path": "."})
    if response.status_code == 200 and response.json()["result"]["matches"]:
        seen.ok, seen.note = False, "the search found the canary through a link"
    return seen


def _path(case_id: str, what: str, status: int, code: str | None, attempt: Attempt) -> Case:
    return Case(case_id, "paths", what, status, code, attempt)


_OUT, _LINK, _BAD, _MISSING = "PATH_OUTSIDE_SANDBOX", "SYMLINK_DENIED", "INVALID_PATH", "NOT_FOUND"
PATHS: tuple[Case, ...] = (
    _path("path-dotdot", "../canary.txt", 403, _OUT, _read("../canary.txt")),
    _path("path-dotdot-chain", "a/../../../../../../etc/passwd", 403, _OUT,
          _read("a/../../../../../../etc/passwd")),
    _path("path-absolute", "/etc/passwd", 403, _OUT, _read("/etc/passwd")),
    _path("path-tilde", "~/.ssh/id_rsa", 403, _OUT, _read("~/.ssh/id_rsa")),
    _path("path-tilde-user", "~root/.bashrc", 403, _OUT, _read("~root/.bashrc")),
    _path("path-encoded", "%2e%2e%2fcanary.txt is a literal name", 404, _MISSING,
          _read("%2e%2e%2fcanary.txt")),
    _path("path-double-encoded", "%252e%252e%252f is a literal name", 404, _MISSING,
          _read("%252e%252e%252fcanary.txt")),
    _path("path-overlong-utf8", "..%c0%af is a literal name", 404, _MISSING,
          _read("..%c0%afcanary.txt")),
    _path("path-backslash", "..\\canary.txt is a literal name", 404, _MISSING,
          _read("..\\canary.txt")),
    _path("path-nul", "notes.txt NUL .png", 400, _BAD, _read("notes.txt\x00.png")),
    _path("path-long-name", "a 300-byte name", 400, _BAD, _read("a" * 300)),
    _path("path-directory-as-file", "'.' read as a file", 400, _BAD, _read(".")),
    _path("path-prefix-sibling", "../workspace-evil/secret.txt", 403, _OUT,
          _read("../workspace-evil/secret.txt")),
    _path("path-symlink-file", "a symlink to a file outside", 403, _LINK, _read("link-out")),
    _path("path-symlinked-directory", "a symlinked directory component", 403, _LINK,
          _read("linkdir/canary.txt")),
    _path("path-hardlink", "a hard link to a file outside", 403, _OUT, _read("hard")),
    _path("path-fifo", "a FIFO (must not block)", 400, _BAD, _read("fifo")),
    _path("path-proc-self", "/proc/self/environ", 403, _OUT, _read("/proc/self/environ")),
    _path("path-proc-relative", "proc/self/environ inside the workspace", 404, _MISSING,
          _read("proc/self/environ")),
    _path("path-list-parent", "file.list of ..", 403, _OUT, _read("..", "file.list")),
    _path("path-search-parent", "file.search of ..", 403, _OUT,
          _read("..", "file.search", query="SONIA")),
    _path("path-search-skips-links", "file.search of the workspace never follows links",
          200, None, search_skips_links),
    _path("path-write-dangling-symlink", "file.write through a dangling symlink", 403, _LINK,
          _approved("file.write", {"path": "dangling", "content": "x"})),
    _path("path-write-outside", "file.write ../escaped.txt", 403, _OUT,
          _approved("file.write", {"path": "../escaped.txt", "content": "x"})),
    _path("path-write-git-hook", "file.write .git/hooks/pre-commit", 403, "POLICY_DENIED",
          _approved("file.write", {"path": ".git/hooks/pre-commit", "content": "id",
                                   "parents": True})),
    _path("path-write-env", "file.write .env", 403, "POLICY_DENIED",
          _approved("file.write", {"path": ".env", "content": "A=1"})),
    _path("path-write-gitconfig", "file.write .gitconfig (the child's HOME)", 403,
          "POLICY_DENIED", _approved("file.write", {"path": ".gitconfig", "content": "x"})),
    _path("path-delete-outside", "file.delete ../canary.txt", 403, _OUT,
          _approved("file.delete", {"path": "../canary.txt"})),
)


# --- secrets -------------------------------------------------------------------------------
def _redacted(tool: str, args: dict[str, Any]) -> Attempt:
    def attempt(p: Probe) -> Observed:
        response, seen = p.act(tool, args)
        text = response.text
        shown = [name for name, value in p.secrets.items() if value in text]
        seen.extra["secrets_in_answer"] = shown
        if shown or "[REDACTED" not in text:
            seen.ok = False
            seen.note = f"secrets in the answer: {shown}" if shown else "nothing was redacted"
        return seen
    return attempt


def no_token_in_logs(p: Probe) -> Observed:
    """Every log of the home, scanned for every credential the run used."""
    wanted = {f"{k} token": v for k, v in p.home.all_tokens().items()}
    wanted |= {"user key": p.stack.user_key, "approver key": p.stack.approver_key,
               "other user key": p.other_user_key}
    wanted |= {f"grant {i}": g for i, g in enumerate(p.grants_seen)}
    pem = p.home.grant_key_file.read_text().splitlines()
    wanted["grant private key"] = next(line for line in pem if line and "-----" not in line)
    wanted |= {f"planted {k}": v for k, v in p.secrets.items()}
    logs = read_logs(p.home.logs)
    found = sorted({f"{name} in {file}" for file, text in logs.items()
                    for name, value in wanted.items() if value and value in text})
    seen = Observed(200 if not found else 500, None,
                    {"scan": sorted(logs), "credentials": sorted(wanted)},
                    json.dumps({"found": found}))
    seen.extra["log_bytes"] = sum(len(t) for t in logs.values())
    if found:
        seen.ok, seen.note = False, f"credentials in logs: {found}"
    return seen


_C = "secrets"
SECRETS: tuple[Case, ...] = (
    Case("secrets-file-read-redacted", _C, "file.read of a file full of credentials",
         200, None, _redacted("file.read", {"path": "secrets.txt"})),
    Case("secrets-shell-redacted", _C, "cat of the same file through shell.run", 200, None,
         _redacted("shell.run", {"argv": ["cat", "secrets.txt"]})),
    Case("secrets-search-redacted", _C, "file.search matching the credential lines",
         200, None, _redacted("file.search", {"query": "password"})),
)
LATE_CASES: tuple[Case, ...] = (
    Case("secrets-no-credential-in-logs", _C, "every home/logs/* file scanned for every "
         "token, key, grant and planted secret of the run", 200, None, no_token_in_logs),
)


# --- sockets -------------------------------------------------------------------------------
def _stack_processes(p: Probe) -> list[psutil.Process]:
    pid = control.supervisor_pid(p.home)
    if pid is None:
        raise AssertionError("the stack's supervisor is not running")
    supervisor = psutil.Process(pid)
    return [supervisor, *supervisor.children(recursive=True)]


def _listening(p: Probe) -> list[dict[str, Any]]:
    pids = {proc.pid for proc in _stack_processes(p)}
    return [{"pid": c.pid, "address": c.laddr.ip, "port": c.laddr.port}
            for c in psutil.net_connections(kind="inet")
            if c.pid in pids and c.status == psutil.CONN_LISTEN]


def loopback_only(p: Probe) -> Observed:
    sockets = _listening(p)
    public = [s for s in sockets if not ipaddress.ip_address(s["address"]).is_loopback]
    seen = Observed(200 if sockets and not public else 500, None, {"scan": "psutil"},
                    json.dumps(sockets))
    if public or not sockets:
        seen.ok, seen.note = False, f"not on loopback: {public}" if public else "no sockets"
    return seen


def expected_ports_only(p: Probe) -> Observed:
    sockets = _listening(p)
    ports = {p.stack.settings.port_of(name) for name in SERVICES}
    extra = [s for s in sockets if s["port"] not in ports]
    missing = sorted(ports - {s["port"] for s in sockets})
    seen = Observed(200 if not extra and not missing else 500, None, {"scan": "psutil"},
                    json.dumps({"extra": extra, "missing": missing}))
    if extra or missing:
        seen.ok, seen.note = False, f"unexpected listeners {extra}, missing ports {missing}"
    return seen


def unreachable_from_other_interfaces(p: Probe) -> Observed:
    """Connecting to each service port on every non-loopback address of this host fails."""
    addresses = sorted({a.address.split("%")[0] for addrs in psutil.net_if_addrs().values()
                        for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)
                        and not ipaddress.ip_address(a.address.split("%")[0]).is_loopback})
    reached = []
    for address in addresses:
        for name in SERVICES:
            port = p.stack.settings.port_of(name)
            try:
                with socket.create_connection((address, port), timeout=1.0):
                    reached.append(f"{name}@{address}:{port}")
            except OSError:
                continue
    seen = Observed(200 if not reached else 500, None, {"connect_to": addresses},
                    json.dumps({"reached": reached}))
    seen.extra["addresses_tried"] = len(addresses)
    if reached:
        seen.ok, seen.note = False, f"reachable off loopback: {reached}"
    return seen


SOCKETS: tuple[Case, ...] = (
    Case("sockets-loopback-only", "sockets", "every listening socket of the stack's "
         "processes is on a loopback address", 200, None, loopback_only),
    Case("sockets-service-ports-only", "sockets", "the stack listens on its six service "
         "ports and nothing else", 200, None, expected_ports_only),
    Case("sockets-unreachable-off-loopback", "sockets", "connecting to the service ports on "
         "the host's other addresses is refused", 200, None, unreachable_from_other_interfaces),
)

CASES: tuple[Case, ...] = (*SERVICE_AUTH, *GRANT_CASES, *APPROVALS, *COMMANDS, *PATHS,
                           *SECRETS, *SOCKETS, *REPO_CASES, *READ_CASES, *ROBUSTNESS_CASES)
"""Every live case, in the order the gate runs them (LATE_CASES run after them)."""


def categories(cases: tuple[Case, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.category] = counts.get(case.category, 0) + 1
    return counts
