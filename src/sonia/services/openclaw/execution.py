"""Running a validated command: the OS sandbox around `shell.run`.

The command allowlist (EVA's `commands` module) turns an argv into a `CommandPlan`:
an absolute binary and literal arguments. This module only runs such a plan, and
never through a shell:

- an empty environment plus `LANG=C.UTF-8`, `PATH=/usr/bin:/bin`, `HOME=<workspace>`
  and `PWD=<cwd>`;
- the working directory inside the workspace, entered with `fchdir` on a directory
  fd resolved by the path sandbox (so no symlink swapped in meanwhile is followed);
- rlimits set in the child before exec: CPU seconds, 1 GiB of address space, file
  size, open files, no core dumps. RLIMIT_NPROC is not set: it counts every process
  of the user (the services included), and root ignores it;
- its own session and process group; at the deadline, or when the output passes
  its cap, the whole group gets SIGKILL. The group is also killed when the command
  exits, so nothing it left in the background outlives it. The leader is waited
  for with WNOWAIT and reaped only after `killpg`, so the group id can never have
  been reused by an unrelated process when the signal is sent;
- stdout and stderr are each kept up to `max_output_bytes`, then cut with a marker,
  decoded as UTF-8 and redacted;
- where bubblewrap works, inside `bwrap --unshare-all --unshare-user --uid 65534
  --gid 65534` (no network; own user, PID, IPC and UTS namespaces; no
  capabilities; the command is uid/gid 65534 in its namespace, so it holds no
  privilege even when Sonia runs as root), with only /usr (and the merged-/usr
  links), a few files of /etc, a fresh /proc, /dev and /tmp, and the workspace
  (read-write) visible: the home, its `secrets/` and everything else do not exist
  there. The workspace stays writable without changing its ownership, because the
  namespace maps uid 65534 onto the service's own uid. Paths in `CommandPlan.hidden`
  (protected names found below the workspace) are covered: directories with an
  empty tmpfs, files with `/dev/null`, so a recursive command cannot read them;
- without bubblewrap, nothing runs (`shell.run` is 503 SANDBOX_UNAVAILABLE) unless
  the operator set `openclaw.allow_unsandboxed = true`. Then, when Sonia runs as
  root, the child is started as `nobody` (subprocess's `user=`, `group=`,
  `extra_groups=[]`, applied before exec); mutating commands then fail with
  "permission denied" in a root-owned workspace, which fails closed. A recursive
  command that would meet a protected name is refused at that level, since
  nothing can hide it.

`detect_sandbox()` probes bubblewrap once, by really running it, and reports the
level in force; it never claims bwrap when the probe failed. A run past its
deadline raises `sonia.errors.Timeout` (504) carrying the partial result.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sonia.actions.commands import CommandPlan
from sonia.errors import ConfigError, InvalidCommand, PolicyDenied, SandboxUnavailable, Timeout
from sonia.redact import Redactor, default_redactor
from sonia.services.openclaw.paths import Workspace
from sonia.services.openclaw.reaper import REAPER

__all__ = [
    "CHILD_PATH",
    "ExecutionResult",
    "Executor",
    "Limits",
    "SandboxLevel",
    "bwrap_argv",
    "detect_sandbox",
]

CHILD_PATH = "/usr/bin:/bin"
UNPRIVILEGED_ID = 65534
"""The uid and gid commands run as (`nobody`/`nogroup`): never root."""
_READ_CHUNK = 65536
_DRAIN_AFTER_EXIT_SECONDS = 2.0
_PROBE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class SandboxLevel:
    """The isolation actually in force, as found by running it.

    `unavailable` means no sandbox works and the operator did not allow running
    commands without one: `shell.run` is refused.
    """

    level: Literal["bwrap", "rlimits", "unavailable"]
    network: Literal["none", "host"]
    reason: str
    bwrap_path: str | None = None

    @property
    def runs_as(self) -> int:
        """The uid a command has (inside its namespace under bwrap)."""
        if self.level == "bwrap" or os.geteuid() == 0:
            return UNPRIVILEGED_ID
        return os.geteuid()

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "network": self.network, "reason": self.reason,
                "runs_as_uid": str(self.runs_as)}


@dataclass(frozen=True)
class Limits:
    """Resource limits of a child; CPU seconds follow from the timeout."""

    address_space_bytes: int = 1 << 30
    file_size_bytes: int = 64 << 20
    open_files: int = 256


@dataclass(frozen=True)
class ExecutionResult:
    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_seconds: float
    timed_out: bool
    sandbox: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- bubblewrap -----------------------------------------------------------------
_MERGED_USR_TOPS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime")


def bwrap_argv(bwrap: str, workspace: str, cwd: str, env: Mapping[str, str],
               hidden: Sequence[str] = ()) -> list[str]:
    """The bwrap command line up to and including `--`; the binary and its args follow.

    `hidden` are absolute paths below `workspace` to cover (an existing directory
    with an empty read-only tmpfs, anything else with /dev/null).
    """
    ident = str(UNPRIVILEGED_ID)
    argv = [bwrap, "--unshare-all", "--unshare-user", "--uid", ident, "--gid", ident,
            "--die-with-parent", "--new-session", "--clearenv",
            "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
    for top in _MERGED_USR_TOPS:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
             "--bind", workspace, workspace]
    for path in hidden:
        if os.path.isdir(path) and not os.path.islink(path):
            argv += ["--tmpfs", path, "--remount-ro", path]
        else:
            argv += ["--ro-bind", "/dev/null", path]
    argv += ["--chdir", cwd]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return [*argv, "--"]


def _child_env(home: str, cwd: str) -> dict[str, str]:
    """The whole environment of a tool's child: nothing inherited.

    Git reads configuration from the system and the user's home as well as the
    repository; both are switched off, so no config outside the workspace (and so
    no pager, hook path or filter from it) can reach a command. Git looks for a
    repository no higher than the workspace (`GIT_CEILING_DIRECTORIES` is its
    parent), so a home kept under git is never read through the workspace.
    """
    return {"LANG": "C.UTF-8", "PATH": CHILD_PATH, "HOME": home, "PWD": cwd,
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ATTR_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
            "GIT_CEILING_DIRECTORIES": os.path.dirname(home.rstrip("/")) or "/"}


def _run_probe(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run, with the child registered with the reaper while it runs."""
    proc = REAPER.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, env={}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=_PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        REAPER.release(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _probe_bwrap(bwrap: str) -> tuple[bool, str, bool]:
    """(works, reason, network isolated) from running `true` and reading /proc/net/dev."""
    with tempfile.TemporaryDirectory(prefix="sonia-bwrap-probe-") as scratch:
        prefix = bwrap_argv(bwrap, scratch, scratch, _child_env(scratch, scratch))
        true = shutil.which("true", path=CHILD_PATH) or "/usr/bin/true"
        try:
            done = _run_probe([*prefix, true])
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"bwrap probe failed: {exc}", False
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = message[0] if message else f"exit code {done.returncode}"
            return False, f"bwrap probe failed: {why}", False
        cat = shutil.which("cat", path=CHILD_PATH)
        if cat is None:
            return True, "bwrap probe ran true; --unshare-net is mandatory in bwrap", True
        try:
            net = _run_probe([*prefix, cat, "/proc/net/dev"])
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"bwrap network probe failed: {exc}", False
        interfaces = {line.split(":", 1)[0].strip()
                      for line in net.stdout.decode("utf-8", "replace").splitlines()[2:]
                      if ":" in line}
        if net.returncode != 0 or interfaces - {"lo"}:
            return True, f"bwrap runs but sees interfaces {sorted(interfaces)}", False
        return True, "bwrap probe ran true; only loopback inside", True


_PROBES: dict[str, tuple[bool, str, bool]] = {}
_PROBE_LOCK = threading.Lock()


def detect_sandbox(preference: str = "auto", *, bwrap: str | None = None,
                   allow_unsandboxed: bool = False) -> SandboxLevel:
    """The sandbox level for `preference` (auto | bwrap | rlimits), probed once per binary.

    `bwrap` demands bubblewrap: a failed probe is a ConfigError (the service should
    refuse to start rather than run commands with less isolation than configured).
    `rlimits` (no sandbox) needs `allow_unsandboxed`, else ConfigError; `auto`
    without a working bubblewrap is `unavailable` unless `allow_unsandboxed`.
    """
    if preference not in ("auto", "bwrap", "rlimits"):
        raise ConfigError(f"sandbox must be auto, bwrap or rlimits, not {preference!r}",
                          key="openclaw.sandbox")
    if preference == "rlimits":
        if not allow_unsandboxed:
            raise ConfigError("openclaw.sandbox = rlimits runs commands without a sandbox; "
                              "set openclaw.allow_unsandboxed = true to accept that, or use "
                              "auto or bwrap", key="openclaw.allow_unsandboxed")
        return SandboxLevel("rlimits", "host", "configured: openclaw.sandbox = rlimits")
    path = bwrap or shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if path is None:
        works, reason, isolated = False, "bwrap is not installed", False
    else:
        with _PROBE_LOCK:
            if path not in _PROBES:
                _PROBES[path] = _probe_bwrap(path)
            works, reason, isolated = _PROBES[path]
    if works:
        return SandboxLevel("bwrap", "none" if isolated else "host", reason, bwrap_path=path)
    if preference == "bwrap":
        raise ConfigError(f"openclaw.sandbox is bwrap but {reason}", key="openclaw.sandbox")
    if not allow_unsandboxed:
        return SandboxLevel("unavailable", "host",
                            f"{reason}; shell.run is refused (openclaw.allow_unsandboxed "
                            f"is false)")
    return SandboxLevel("rlimits", "host", f"fell back to rlimits: {reason}")


# --- running --------------------------------------------------------------------
class _Capture:
    """Keeps the first `cap` bytes of a stream and notes whether more came."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True

    def text(self, redactor: Redactor) -> str:
        text = redactor.redact(self.data.decode("utf-8", "replace"))
        if self.truncated:
            text += f"\n[output truncated at {self.cap} bytes]"
        return text


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _has_exited(pid: int) -> bool:
    """Whether `pid` exited, leaving it unreaped (a zombie keeps its group id taken)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class Executor:
    """Runs command plans in the workspace under the sandbox level it was given."""

    def __init__(
        self,
        workspace: Workspace,
        sandbox: SandboxLevel,
        *,
        timeout_seconds: float = 10.0,
        max_output_bytes: int = 65536,
        limits: Limits | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.workspace = workspace
        self.sandbox = sandbox
        self.timeout_seconds = timeout_seconds
        self.max_output_bytes = max_output_bytes
        self.limits = limits or Limits()
        self.redactor = redactor or default_redactor()

    def _rlimits(self, timeout: float) -> list[tuple[int, int]]:
        wanted = [
            (resource.RLIMIT_CPU, math.ceil(timeout) + 1),
            (resource.RLIMIT_AS, self.limits.address_space_bytes),
            (resource.RLIMIT_FSIZE, self.limits.file_size_bytes),
            (resource.RLIMIT_NOFILE, self.limits.open_files),
            (resource.RLIMIT_CORE, 0),
        ]
        out = []
        for which, value in wanted:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            out.append((which, value))
        return out

    def run(self, plan: CommandPlan, *, cwd: str = ".", timeout: float | None = None
            ) -> ExecutionResult:
        """Run `plan` with working directory `cwd` (workspace-relative)."""
        if self.sandbox.level == "unavailable":
            raise SandboxUnavailable(f"no sandbox can contain commands: {self.sandbox.reason}")
        if plan.recursive and plan.hidden and self.sandbox.level != "bwrap":
            raise PolicyDenied(
                f"{plan.argv[0]!r} would walk into protected names "
                f"({len(plan.hidden)}), which only bubblewrap can hide")
        if not os.path.isabs(plan.binary) or not plan.argv:
            raise InvalidCommand("a command plan needs an absolute binary and an argv")
        if any("\x00" in arg for arg in [plan.binary, *plan.argv]):
            raise InvalidCommand("a command argument contains a NUL byte")
        timeout = self.timeout_seconds if timeout is None else timeout
        parts = self.workspace.parse(cwd)
        cwd_fd = self.workspace.open_dir(cwd)
        try:
            return self._run(plan, cwd_fd, self.workspace.absolute(parts), timeout)
        finally:
            os.close(cwd_fd)

    def _run(self, plan: CommandPlan, cwd_fd: int, cwd_path: str, timeout: float
             ) -> ExecutionResult:
        env = _child_env(self.workspace.root, cwd_path)
        limits = self._rlimits(timeout)

        def child_setup() -> None:  # runs in the child between fork and exec
            os.fchdir(cwd_fd)
            for which, value in limits:
                resource.setrlimit(which, (value, value))

        identity: dict[str, Any] = {}
        if self.sandbox.level == "bwrap" and self.sandbox.bwrap_path:
            prefix = bwrap_argv(self.sandbox.bwrap_path, self.workspace.root, cwd_path, env,
                                plan.hidden)
            args, executable, child_env = [*prefix, plan.binary, *plan.argv[1:]], None, {}
        else:
            args, executable, child_env = list(plan.argv), plan.binary, env
            if os.geteuid() == 0:  # never root: the child drops to nobody before exec
                identity = {"user": UNPRIVILEGED_ID, "group": UNPRIVILEGED_ID,
                            "extra_groups": []}
        started = time.monotonic()
        try:
            proc = REAPER.popen(
                args, executable=executable, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=child_env, start_new_session=True,
                preexec_fn=child_setup, close_fds=True, shell=False, **identity,
            )
        except OSError as exc:
            raise InvalidCommand(f"{plan.argv[0]!r} could not be started: {exc.strerror}"
                                 ) from exc
        out, err = _Capture(self.max_output_bytes), _Capture(self.max_output_bytes)
        try:
            timed_out = self._collect(proc, out, err, started + timeout)
        finally:
            REAPER.release(proc)
        duration = time.monotonic() - started
        result = ExecutionResult(
            exit_code=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
            stdout=out.text(self.redactor), stderr=err.text(self.redactor),
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
            duration_seconds=round(duration, 6), timed_out=timed_out,
            sandbox=self.sandbox.as_dict(),
        )
        if timed_out:
            raise Timeout(
                f"{plan.argv[0]!r} ran longer than {timeout:g} s; its process group was killed",
                extra={"result": result.as_dict()},
            )
        return result

    def _collect(self, proc: subprocess.Popen[bytes], out: _Capture, err: _Capture,
                 deadline: float) -> bool:
        """Read both pipes until exit and EOF, the deadline, or too much output.

        Returns whether the deadline passed before the command exited. Always leaves
        the process group killed and the leader reaped.
        """
        assert proc.stdout is not None and proc.stderr is not None
        selector = selectors.DefaultSelector()
        pidfd = -1
        with contextlib.suppress(OSError, AttributeError):
            pidfd = os.pidfd_open(proc.pid)
        try:
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, out)
            selector.register(proc.stderr.fileno(), selectors.EVENT_READ, err)
            if pidfd >= 0:
                selector.register(pidfd, selectors.EVENT_READ, None)
            exited = timed_out = False
            pipes = 2
            while pipes or not exited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = not exited
                    break
                wait = remaining if pidfd >= 0 else min(remaining, 0.05)
                for key, _events in selector.select(wait):
                    if key.data is None:
                        selector.unregister(key.fd)
                        continue
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if chunk:
                        key.data.add(chunk)
                    else:
                        selector.unregister(key.fd)
                        pipes -= 1
                if out.truncated or err.truncated:
                    break
                if not exited and _has_exited(proc.pid):
                    exited = True
                    _kill_group(proc.pid)  # leftovers; the leader is an unreaped zombie
                    deadline = min(deadline, time.monotonic() + _DRAIN_AFTER_EXIT_SECONDS)
            _kill_group(proc.pid)
            proc.wait()
            return timed_out
        finally:
            selector.close()
            if pidfd >= 0:
                os.close(pidfd)
            proc.stdout.close()
            proc.stderr.close()
