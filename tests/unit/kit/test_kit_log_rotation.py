"""File logs roll over by size: every line lands whole in exactly one file, in order, the
files stay private, and readers (`sonia logs`, the soak's trace) see one stream."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path

import pytest

from sonia.config import LogSettings
from sonia.kit.logfiles import Follower, read_lines, roll_over, rolled, siblings, tail
from sonia.kit.logs import JsonFormatter, PrivateRotatingFileHandler
from sonia.supervisor.process import roll_over_when_full

MAX_BYTES = 4096


@pytest.fixture()
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "gateway.log"


@pytest.fixture()
def logger(log_path: Path) -> Iterator[logging.Logger]:
    """A logger writing through the services' own handler and formatter, small files."""
    log_path.parent.mkdir()
    handler = PrivateRotatingFileHandler(log_path, LogSettings(max_bytes=MAX_BYTES, keep=1000))
    handler.setFormatter(JsonFormatter("gateway"))
    log = logging.getLogger(f"test.rotation.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield log
    log.removeHandler(handler)
    handler.close()


def numbers(lines: list[str]) -> list[int]:
    """The `n` of every line, each of which must be whole JSON."""
    return [int(json.loads(line)["msg"].split()[1]) for line in lines]


def test_a_log_rolls_over_and_loses_no_line_across_the_boundary(
        logger: logging.Logger, log_path: Path) -> None:
    for n in range(400):
        logger.info("line %d %s", n, "x" * (n % 50))
    files = siblings(log_path)
    assert len(files) > 5, "400 lines of ~200 bytes fill several 4 KiB files"
    assert files[-1] == log_path and files[-2] == rolled(log_path, 1)
    assert numbers(list(read_lines(log_path))) == list(range(400))


def test_each_file_passes_the_limit_by_at_most_one_line(
        logger: logging.Logger, log_path: Path) -> None:
    for n in range(300):
        logger.info("line %d", n)
    for path in siblings(log_path):
        lines = path.read_text().splitlines()
        assert path.stat().st_size - len(lines[-1]) - 1 < MAX_BYTES
        numbers(lines)  # whole lines only


def test_every_file_of_a_log_is_private_whatever_the_umask(
        logger: logging.Logger, log_path: Path) -> None:
    for n in range(200):
        logger.info("line %d", n)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in siblings(log_path)}
    assert len(modes) > 1 and set(modes.values()) == {0o600}, modes


def test_only_keep_rolled_over_files_remain(tmp_path: Path) -> None:
    path = tmp_path / "eva.log"
    handler = PrivateRotatingFileHandler(path, LogSettings(max_bytes=MAX_BYTES, keep=2))
    handler.setFormatter(JsonFormatter("eva"))
    log = logging.getLogger("test.rotation.keep")
    log.propagate = False
    log.addHandler(handler)
    try:
        for n in range(500):
            log.warning("line %d", n)
    finally:
        log.removeHandler(handler)
        handler.close()
    assert siblings(path) == [rolled(path, 2), rolled(path, 1), path]
    kept = numbers(list(read_lines(path)))
    assert kept == list(range(kept[0], 500)), "the newest lines, in order"


def test_the_supervisor_rolls_captured_output_the_way_the_handler_rolls_logs(
        tmp_path: Path) -> None:
    """Same names as the standard library's handler, so one reader reads both."""
    ours, theirs = tmp_path / "ours" / "eva.out", tmp_path / "theirs" / "eva.out"
    for path in (ours, theirs):
        path.parent.mkdir()
    handler = RotatingFileHandler(theirs, maxBytes=1, backupCount=3, delay=True)
    for n in range(5):
        for path in (ours, theirs):
            path.write_text(f"start {n}\n")
        roll_over(ours, keep=3)
        handler.doRollover()
    handler.close()
    assert [p.name for p in siblings(ours)] == [p.name for p in siblings(theirs)]
    assert [p.read_text() for p in siblings(theirs)] == ["start 2\n", "start 3\n", "start 4\n"]
    assert [p.read_text() for p in siblings(ours)] == ["start 2\n", "start 3\n", "start 4\n"]


def test_captured_output_rolls_over_only_once_full(tmp_path: Path) -> None:
    out = tmp_path / "voice.out"
    settings = LogSettings(max_bytes=MAX_BYTES, keep=3)
    out.write_text("a traceback\n")
    roll_over_when_full(out, settings)
    assert siblings(out) == [out]
    out.write_text("x" * MAX_BYTES)
    roll_over_when_full(out, settings)
    assert siblings(out) == [rolled(out, 1)]


def test_a_follower_reads_on_across_a_roll_over(logger: logging.Logger, log_path: Path) -> None:
    """`sonia logs -f`: the end of the old file, then the new one, nothing twice."""
    logger.info("line 0 before following")
    follower = Follower(log_path)
    seen: list[str] = []
    for n in range(1, 300):
        logger.info("line %d", n)
        if n % 7 == 0:  # several lines, sometimes a roll-over, between two polls
            seen += follower.poll()
    seen += follower.poll()
    assert len(siblings(log_path)) > 3
    assert numbers(seen) == list(range(1, 300))


def test_a_follower_never_returns_half_a_line(tmp_path: Path) -> None:
    path = tmp_path / "memory.log"
    path.write_text("")
    follower = Follower(path)
    with open(path, "a") as out:
        out.write('{"msg": "whole"}\n{"msg": "hal')
        out.flush()
        assert follower.poll() == ['{"msg": "whole"}']
        out.write('f"}\n')
    assert follower.poll() == ['{"msg": "half"}']


def test_tail_reaches_into_the_rolled_over_file(
        logger: logging.Logger, log_path: Path) -> None:
    for n in range(100):
        logger.info("line %d", n)
    live = len(log_path.read_text().splitlines())
    assert numbers(tail(log_path, live + 5)) == list(range(100 - live - 5, 100))
