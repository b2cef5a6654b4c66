"""Each unsafe or broken configuration refuses to start: exit 2, naming what to fix.

The cases live in `sonia.gates.security.config_cases`, shared with the security gate:
settings and secrets are refused by `sonia up` before anything starts, policy
files by the services that load them (EVA, OpenClaw) before they bind a port.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sonia.gates.security.config_cases import CONFIG_CASES, run_config_case
from sonia.home import Home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home.at(tmp_path_factory.mktemp("template") / "home")
    home.init()
    return home


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_configuration_exits_2_with_a_clear_message(
    template: Home, tmp_path: Path, case: str
) -> None:
    outcome = run_config_case(CONFIG_CASES[case], template, tmp_path)
    assert outcome.passed, f"{outcome.why}\n{outcome.stderr}"
    assert outcome.exit_code == 2
    assert not outcome.started, "nothing may start"
