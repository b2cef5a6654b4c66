"""The effect oracle on real files and processes: what it sees, and what it must not blame.

Each test snapshots a real folder tree, does one thing a payload could do, and
checks the diff names it (and only it); effects that were there before the
snapshot belong to an earlier case and are not reported again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sonia.gates.security.effects import EffectWatch


def _watch(tmp_path: Path) -> EffectWatch:
    home = tmp_path / "home"
    (home / "workspace").mkdir(parents=True)
    (home / "canary.txt").write_text("canary\n")
    (home / "workspace" / "sentinel.txt").write_text("keep\n")
    return EffectWatch({"canary": home / "canary.txt",
                        "sentinel": home / "workspace" / "sentinel.txt"},
                       {"home": home}, "sonia-marker-test1", (home,),
                       ignored_names=frozenset({"logs"}))


def test_nothing_happened_is_an_empty_diff(tmp_path: Path) -> None:
    watch = _watch(tmp_path)
    diff = watch.diff(watch.snapshot())
    assert diff["files_watched"] == 2
    assert not any(diff[k] for k in ("changed", "created_outside", "removed_outside",
                                     "markers", "marker_processes"))


def test_a_changed_or_deleted_file_and_a_new_name_are_seen(tmp_path: Path) -> None:
    watch = _watch(tmp_path)
    before = watch.snapshot()
    (tmp_path / "home" / "canary.txt").unlink()
    (tmp_path / "home" / "workspace" / "sentinel.txt").write_text("changed\n")
    (tmp_path / "home" / "escaped.txt").write_text("x")
    (tmp_path / "home" / "logs").mkdir()  # the product's own folder: not a finding
    diff = watch.diff(before)
    assert diff["changed"] == ["canary", "sentinel"]
    assert diff["created_outside"] == ["home/escaped.txt"]


def test_a_marker_file_and_process_are_seen_once(tmp_path: Path) -> None:
    watch = _watch(tmp_path)
    before = watch.snapshot()
    marker = tmp_path / "home" / "workspace" / "sonia-marker-test1-case"
    marker.write_text("1000\n")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                              "sonia-marker-test1-proc"], stdin=subprocess.PIPE)
    try:
        diff = watch.diff(before)
        assert diff["markers"] == [{"path": str(marker), "uid": marker.stat().st_uid,
                                    "content": "1000"}]
        assert [p["pid"] for p in diff["marker_processes"]] == [child.pid]
        later = watch.diff(watch.snapshot())  # the next case does not inherit them
        assert later["markers"] == [] and later["marker_processes"] == []
    finally:
        child.communicate(input=b"", timeout=30)


def test_every_name_in_the_workspace_tree_is_watched_without_following_or_opening(
        tmp_path: Path) -> None:
    watch = _watch(tmp_path)
    workspace = tmp_path / "home" / "workspace"
    watch.trees = {"workspace": workspace}
    (workspace / "deep" / "er").mkdir(parents=True)
    (workspace / "deep" / "er" / "kept.txt").write_text("one\n")
    os.mkfifo(workspace / "fifo")  # opening it would block the gate
    os.symlink(tmp_path / "home", workspace / "out")  # followed, it would list the home
    before = watch.snapshot()
    assert set(before.trees["workspace"]) == {
        "sentinel.txt", "deep", "deep/er", "deep/er/kept.txt", "fifo", "out"}
    (workspace / "deep" / "er" / "kept.txt").write_text("two\n")
    (workspace / "new.txt").write_text("new\n")
    (workspace / "out").unlink()
    os.symlink("/etc", workspace / "out")
    (workspace / "fifo").unlink()
    diff = watch.diff(before)
    assert diff["tree_entries"] == 6
    assert [(c["path"], c["change"]) for c in diff["tree_changes"]] == [
        ("deep/er/kept.txt", "changed"), ("fifo", "removed"), ("new.txt", "created"),
        ("out", "changed")]
    assert watch.diff(watch.snapshot())["tree_changes"] == []
