"""The workspace path sandbox refuses every way out, with the right code, on both mechanisms.

Every test runs twice: once resolving with openat2 (skipped where the kernel lacks
it) and once with the component-by-component O_NOFOLLOW walk.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sonia.errors import ApiError
from sonia.services.openclaw.paths import DEFAULT_PROTECTED, Workspace

INSIDE = b"inside the workspace\n"
OUTSIDE = b"OUTSIDE-CANARY: must never be read\n"


@dataclass
class Layout:
    ws: Workspace
    root: Path
    outside: Path


@pytest.fixture(params=["openat2", "walk"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Layout]:
    root = tmp_path / "workspace"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "inside.txt").write_bytes(INSIDE)
    (root / "dir" / "sub" / "deep.txt").write_bytes(INSIDE)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(OUTSIDE)
    evil = tmp_path / "workspace-evil"
    evil.mkdir()
    (evil / "secret.txt").write_bytes(OUTSIDE)
    ws = Workspace(root, use_openat2=request.param == "openat2")
    if ws.mechanism != request.param:
        ws.close()
        pytest.skip(f"openat2 is not usable here: {ws.fallback_reason}")
    try:
        yield Layout(ws, root, outside)
    finally:
        ws.close()


def refused(ws: Workspace, path: str) -> str:
    """The error code reading `path` answers (the test fails if it reads anything)."""
    with pytest.raises(ApiError) as info:
        data, _size = ws.read_bytes(path, 1 << 16)
        pytest.fail(f"{path!r} was read: {data[:40]!r}")
    return info.value.code


def temp_files(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".sonia-tmp-*")]


# --- what works -------------------------------------------------------------------
def test_files_inside_are_read(layout: Layout) -> None:
    assert layout.ws.read_bytes("inside.txt", 100) == (INSIDE, len(INSIDE))
    assert layout.ws.read_bytes("dir/sub/deep.txt", 100)[0] == INSIDE
    assert layout.ws.read_bytes("./dir//sub/./deep.txt", 100)[0] == INSIDE


def test_a_dotdot_that_stays_inside_is_allowed(layout: Layout) -> None:
    assert layout.ws.read_bytes("dir/../inside.txt", 100)[0] == INSIDE
    assert layout.ws.read_bytes("dir/sub/../../dir/sub/deep.txt", 100)[0] == INSIDE


def test_reads_are_capped_but_report_the_real_size(layout: Layout) -> None:
    assert layout.ws.read_bytes("inside.txt", 6) == (INSIDE[:6], len(INSIDE))


def test_the_mechanism_in_force_is_reported(tmp_path: Path) -> None:
    with Workspace(tmp_path, use_openat2=False) as ws:
        assert ws.mechanism == "walk"
        assert ws.fallback_reason
    with Workspace(tmp_path) as ws:
        assert ws.mechanism in ("openat2", "walk")
        assert (ws.mechanism == "openat2") == (ws.fallback_reason == "")


# --- escapes --------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "../outside/secret.txt",
    "./../outside/secret.txt",
    "dir/../../outside/secret.txt",
    "dir/sub/../../../outside/secret.txt",
    "../../../../../../../../etc/passwd",
    "..",
    "../workspace-evil/secret.txt",
    "../workspace/inside.txt",
    "/etc/passwd",
    "//etc/passwd",
    "/proc/self/root/etc/passwd",
    "~/.bashrc",
    "~root/.bashrc",
    "~",
])
def test_escapes_are_path_outside_sandbox(layout: Layout, path: str) -> None:
    assert refused(layout.ws, path) == "PATH_OUTSIDE_SANDBOX"


def test_an_absolute_path_into_the_workspace_is_still_refused(layout: Layout) -> None:
    assert refused(layout.ws, str(layout.root / "inside.txt")) == "PATH_OUTSIDE_SANDBOX"
    assert refused(layout.ws, str(layout.outside / "secret.txt")) == "PATH_OUTSIDE_SANDBOX"


@pytest.mark.parametrize("name", [
    "%2e%2e%2fsecret.txt",
    "..%2fsecret.txt",
    "..%c0%afsecret.txt",
    "..%252fsecret.txt",
    "..\\..\\secret.txt",
    "....//secret.txt",
    "..;",
])
def test_encoded_forms_are_literal_names(layout: Layout, name: str) -> None:
    assert refused(layout.ws, name) == "NOT_FOUND"
    target = layout.root / name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(INSIDE)
    assert layout.ws.read_bytes(name, 100)[0] == INSIDE


@pytest.mark.parametrize("path", [
    "",
    "inside.txt\x00.png",
    "\x00",
    "a" * 256,
    "/".join(["abcdefg"] * 600),
    "bad\ud800surrogate",
])
def test_malformed_paths_are_invalid_path(layout: Layout, path: str) -> None:
    assert refused(layout.ws, path) == "INVALID_PATH"


@pytest.mark.parametrize("path", ["dir", "dir/", ".", "dir/..", "inside.txt/"])
def test_a_file_path_must_end_in_a_file_name(layout: Layout, path: str) -> None:
    assert refused(layout.ws, path) == "INVALID_PATH"


def test_a_path_through_a_file_is_invalid(layout: Layout) -> None:
    assert refused(layout.ws, "inside.txt/x") == "INVALID_PATH"


# --- symbolic links -------------------------------------------------------------
def test_a_symlink_to_an_outside_file_is_denied(layout: Layout) -> None:
    (layout.root / "link.txt").symlink_to(layout.outside / "secret.txt")
    assert refused(layout.ws, "link.txt") == "SYMLINK_DENIED"


def test_a_symlink_to_an_inside_file_is_denied_too(layout: Layout) -> None:
    (layout.root / "alias.txt").symlink_to("inside.txt")
    assert refused(layout.ws, "alias.txt") == "SYMLINK_DENIED"


def test_a_symlinked_directory_component_is_denied(layout: Layout) -> None:
    (layout.root / "dirlink").symlink_to(layout.outside)
    (layout.root / "dir" / "up").symlink_to("..")
    assert refused(layout.ws, "dirlink/secret.txt") == "SYMLINK_DENIED"
    assert refused(layout.ws, "dir/up/inside.txt") == "SYMLINK_DENIED"
    with pytest.raises(ApiError) as info:
        layout.ws.open_dir("dirlink")
    assert info.value.code == "SYMLINK_DENIED"


def test_a_symlink_to_proc_self_root_is_denied(layout: Layout) -> None:
    (layout.root / "root").symlink_to("/proc/self/root")
    assert refused(layout.ws, "root/etc/passwd") == "SYMLINK_DENIED"


def test_a_dangling_symlink_is_not_a_write_target(layout: Layout) -> None:
    target = layout.outside / "created-through-link.txt"
    (layout.root / "dangling").symlink_to(target)
    with pytest.raises(ApiError) as info:
        layout.ws.write_file("dangling", b"x")
    assert info.value.code == "SYMLINK_DENIED"
    assert not target.exists()
    assert (layout.root / "dangling").is_symlink()


def test_writes_through_a_symlinked_directory_are_denied(layout: Layout) -> None:
    (layout.root / "dirlink").symlink_to(layout.outside)
    for make_parents in (False, True):
        with pytest.raises(ApiError) as info:
            layout.ws.write_file("dirlink/new.txt", b"x", make_parents=make_parents)
        assert info.value.code == "SYMLINK_DENIED"
    assert not (layout.outside / "new.txt").exists()


def test_a_symlink_is_not_deleted_and_its_target_is_untouched(layout: Layout) -> None:
    (layout.root / "link.txt").symlink_to(layout.outside / "secret.txt")
    with pytest.raises(ApiError) as info:
        layout.ws.delete("link.txt")
    assert info.value.code == "SYMLINK_DENIED"
    assert (layout.outside / "secret.txt").read_bytes() == OUTSIDE


# --- hard links and special files ----------------------------------------------------
def test_a_hard_link_to_an_outside_file_is_refused(layout: Layout) -> None:
    os.link(layout.outside / "secret.txt", layout.root / "hard.txt")
    assert refused(layout.ws, "hard.txt") == "PATH_OUTSIDE_SANDBOX"
    for mode in ("overwrite", "append"):
        with pytest.raises(ApiError) as info:
            layout.ws.write_file("hard.txt", b"changed", mode=mode)
        assert info.value.code == "PATH_OUTSIDE_SANDBOX"
    assert (layout.outside / "secret.txt").read_bytes() == OUTSIDE


def test_deleting_a_hard_link_removes_only_the_workspace_name(layout: Layout) -> None:
    os.link(layout.outside / "secret.txt", layout.root / "hard.txt")
    assert layout.ws.delete("hard.txt") == "file"
    assert not (layout.root / "hard.txt").exists()
    assert (layout.outside / "secret.txt").read_bytes() == OUTSIDE


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_blocking(layout: Layout) -> None:
    os.mkfifo(layout.root / "pipe")
    started = time.monotonic()
    assert refused(layout.ws, "pipe") == "INVALID_PATH"
    with pytest.raises(ApiError) as info:
        layout.ws.write_file("pipe", b"x")
    assert info.value.code == "INVALID_PATH"
    assert time.monotonic() - started < 5


def test_a_socket_file_is_refused(layout: Layout) -> None:
    os.mknod(layout.root / "sock", stat.S_IFSOCK | 0o600)
    assert refused(layout.ws, "sock") == "INVALID_PATH"
    with pytest.raises(ApiError) as info:
        layout.ws.write_file("sock", b"x")
    assert info.value.code == "INVALID_PATH"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs CAP_MKNOD (root)")
def test_a_device_is_refused(layout: Layout) -> None:
    try:
        os.mknod(layout.root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this container does not allow mknod of devices")
    assert refused(layout.ws, "null") == "INVALID_PATH"
    with pytest.raises(ApiError) as info:
        layout.ws.write_file("null", b"x")
    assert info.value.code == "INVALID_PATH"


# --- protected names --------------------------------------------------------------
@pytest.mark.parametrize("path", [
    ".env", ".env.local", "sub/.env", ".git/hooks/pre-commit", "a/.git/hooks/post-merge",
    ".GIT/Hooks/pre-commit", ".git/config", ".git/hooks", "x/../.env",
])
def test_protected_names_are_denied_even_before_they_exist(layout: Layout, path: str) -> None:
    with pytest.raises(ApiError) as info:
        layout.ws.write_file(path, b"#!/bin/sh\n", make_parents=True)
    assert info.value.code == "POLICY_DENIED"
    assert refused(layout.ws, path) == "POLICY_DENIED"
    assert not list(layout.root.rglob(".git")) and not list(layout.root.rglob(".env*"))


def test_protected_names_can_be_configured(tmp_path: Path) -> None:
    with Workspace(tmp_path, protected=[*DEFAULT_PROTECTED, "sonia.db", "state/*.json"]) as ws:
        for path in ("sonia.db", "state/run.json", "sub/state/x.json", ".env"):
            with pytest.raises(ApiError) as info:
                ws.write_file(path, b"x", make_parents=True)
            assert info.value.code == "POLICY_DENIED", path
        ws.write_file("state/notes.txt", b"x", make_parents=True)
        ws.write_file("envoy.txt", b"x")
        ws.write_file(".github.txt", b"x")


# --- atomic writes --------------------------------------------------------------
def test_write_create_overwrite_append(layout: Layout) -> None:
    ws = layout.ws
    assert ws.write_file("new.txt", b"one\n", mode="create").created
    with pytest.raises(ApiError) as info:
        ws.write_file("new.txt", b"again", mode="create")
    assert info.value.code == "INVALID_ARGUMENT"
    assert not ws.write_file("new.txt", b"two\n", mode="overwrite").created
    assert ws.write_file("new.txt", b"three\n", mode="append").bytes == len(b"two\nthree\n")
    assert (layout.root / "new.txt").read_bytes() == b"two\nthree\n"
    assert ws.write_file("fresh.txt", b"a", mode="append").created
    assert temp_files(layout.root) == []


def test_overwrite_keeps_the_permissions(layout: Layout) -> None:
    script = layout.root / "script.sh"
    script.write_bytes(b"old")
    script.chmod(0o750)
    layout.ws.write_file("script.sh", b"new")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    assert script.read_bytes() == b"new"


def test_missing_parents_are_not_found_unless_asked_for(layout: Layout) -> None:
    with pytest.raises(ApiError) as info:
        layout.ws.write_file("a/b/c.txt", b"x")
    assert info.value.code == "NOT_FOUND"
    layout.ws.write_file("a/b/c.txt", b"x", make_parents=True)
    assert (layout.root / "a" / "b" / "c.txt").read_bytes() == b"x"


def test_a_directory_is_not_overwritten(layout: Layout) -> None:
    with pytest.raises(ApiError) as info:
        layout.ws.write_file("dir", b"x")
    assert info.value.code == "INVALID_PATH"
    assert (layout.root / "dir").is_dir()


def test_a_refused_write_leaves_nothing_behind(layout: Layout) -> None:
    with pytest.raises(ApiError) as info:
        layout.ws.write_file("inside.txt", b"x" * 200, mode="append", max_bytes=100)
    assert info.value.code == "PAYLOAD_TOO_LARGE"
    assert (layout.root / "inside.txt").read_bytes() == INSIDE
    assert temp_files(layout.root) == []


def test_readers_see_the_old_or_the_new_file_never_a_part(layout: Layout) -> None:
    old, new = b"a" * 300_000, b"b" * 400_000
    layout.ws.write_file("big.txt", old)
    stop = threading.Event()
    seen: set[bytes] = set()

    def read() -> None:
        while not stop.is_set():
            seen.add(layout.ws.read_bytes("big.txt", 1 << 20)[0])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(20):
            layout.ws.write_file("big.txt", new if i % 2 == 0 else old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {old, new}
    assert temp_files(layout.root) == []


# --- delete --------------------------------------------------------------------
def test_delete_files_and_empty_directories(layout: Layout) -> None:
    ws = layout.ws
    assert ws.delete("inside.txt") == "file"
    (layout.root / "empty").mkdir()
    assert ws.delete("empty") == "directory"
    with pytest.raises(ApiError) as info:
        ws.delete("dir")
    assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ApiError) as info:
        ws.delete("missing.txt")
    assert info.value.code == "NOT_FOUND"
    for path in (".", "dir/..", "../outside/secret.txt"):
        with pytest.raises(ApiError):
            ws.delete(path)
    assert (layout.outside / "secret.txt").exists()


def test_a_closed_workspace_refuses_everything(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, use_openat2=False)
    ws.close()
    with pytest.raises(ApiError) as info:
        ws.read_bytes("x", 1)
    assert info.value.code == "UNAVAILABLE"


# --- races ---------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_swapping_a_directory_for_a_symlink_never_leaks_outside_content(
    layout: Layout,
) -> None:
    """Swappers keep replacing `d` by a symlink to an outside directory of the same
    shape (and back) while reads go through `d`: every read is inside content or a
    refusal, never the outside file."""
    root, outside = layout.root, layout.outside
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "secret.txt").write_bytes(INSIDE)
    (root / "d" / "sub" / "secret.txt").write_bytes(INSIDE)
    (outside / "sub").mkdir()
    (outside / "sub" / "secret.txt").write_bytes(OUTSIDE)
    (root / "d_link").symlink_to(outside)
    stop = threading.Event()

    def swap() -> None:
        steps = [("d", "d_saved"), ("d_link", "d"), ("d", "d_link"), ("d_saved", "d")]
        while not stop.is_set():
            for src, dst in steps:
                try:
                    os.rename(root / src, root / dst)
                except OSError:
                    pass  # another swapper got there first

    swappers = [threading.Thread(target=swap) for _ in range(3)]
    for thread in swappers:
        thread.start()
    outcomes: dict[str, int] = {}
    try:
        for i in range(3000):
            path = "d/secret.txt" if i % 2 else "d/sub/secret.txt"
            try:
                data, _ = layout.ws.read_bytes(path, 1 << 10)
            except ApiError as exc:
                outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
                continue
            assert data == INSIDE, f"read {data!r} through a swapped symlink"
            outcomes["inside"] = outcomes.get("inside", 0) + 1
    finally:
        stop.set()
        for thread in swappers:
            thread.join()
    # Which refusal a read gets depends on the moment it looks; that it is one does not.
    assert set(outcomes) <= {"inside", "NOT_FOUND", "SYMLINK_DENIED", "INVALID_PATH"}, outcomes
