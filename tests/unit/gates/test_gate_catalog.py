"""Every gate module is a `Gate`: checked by mypy here (the modules are assigned to the
protocol), and at run time by the registry's own loader, so a gate that drops a
member or changes a signature fails `make check` and `make test`."""

from __future__ import annotations

import inspect

import pytest

from sonia.gates import catalog, determinism, durability, gonogo
from sonia.gates.catalog import GATES, Gate
from sonia.gates.chaos import gate as chaos
from sonia.gates.security import gate as security
from sonia.gates.soak import gate as soak

MODULES: dict[str, Gate] = {
    "go-no-go": gonogo, "security": security, "soak": soak, "durability": durability,
    "determinism": determinism, "chaos": chaos,
}
"""The six gates as the type checker sees them: a module missing a member is an error."""


def test_the_catalog_names_exactly_these_gates() -> None:
    assert list(MODULES) == list(GATES)
    assert all(catalog.load(name) is module for name, module in MODULES.items())


@pytest.mark.parametrize("name", list(GATES))
def test_each_gate_has_the_members_of_the_protocol(name: str) -> None:
    module = catalog.load(name)
    assert module.PROFILES and {"quick", "release"} <= set(module.PROFILES)
    assert module.EVIDENCE_FILES and all(isinstance(f, str) for f in module.EVIDENCE_FILES)
    assert list(inspect.signature(module.run).parameters) == ["run_dir", "profile", "progress"]
    assert list(inspect.signature(module.judge).parameters) == ["run_dir"]
