"""Base ports for stacks: never in the ephemeral range, never overlapping a recent pick,
and, for callers side by side, each in its own share of the range."""

from __future__ import annotations

import pytest

from sonia.supervisor import ports
from sonia.supervisor.ports import SPAN, free_base_port, usable_range
from sonia.testing import worker_share


def test_bases_stay_below_the_ephemeral_range_so_no_client_port_can_take_them() -> None:
    low, high = usable_range()
    ephemeral_low = int(ports.EPHEMERAL_RANGE.read_text().split()[0])
    assert low >= ports.LOWEST and high + SPAN <= ephemeral_low
    assert all(low <= free_base_port() < high for _ in range(20))


def test_one_process_never_hands_out_overlapping_bases() -> None:
    bases = sorted(free_base_port() for _ in range(40))
    assert all(b - a > SPAN for a, b in zip(bases, bases[1:], strict=False))


def test_shares_are_disjoint_slices_of_the_range() -> None:
    low, high = usable_range()
    width = (high - low) // 2
    first = [free_base_port(share=(0, 2)) for _ in range(20)]
    second = [free_base_port(share=(1, 2)) for _ in range(20)]
    assert all(low <= b < low + width - SPAN for b in first)
    assert all(low + width <= b < high for b in second)
    with pytest.raises(ValueError, match="share"):
        free_base_port(share=(2, 2))


def test_a_test_worker_takes_its_share_from_pytest_xdist(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert worker_share() == (1, 2)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "master")
    assert worker_share() == (0, 1)
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert worker_share() == (0, 1)
