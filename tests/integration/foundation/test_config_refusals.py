"""Each unsafe or broken configuration refuses to start: exit 2, naming what to fix.

The cases live in `sonia.gates.security.config_cases`, shared with the security gate:
settings and secrets are refused by `sonia up` before anything starts, policy
files by the services that load them (EVA, OpenClaw) before they bind a port.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sonia.gates.security.config_cases import CONFIG_CASES, ConfigCase, run_config_case
from sonia.home import Home
from sonia.testing import free_stack_port

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


def test_a_service_that_starts_despite_its_configuration_fails_its_case(
        tmp_path: Path) -> None:
    """The judge of a case is what the command did, not how long it took: a service
    that listens has started (and is stopped), however slowly it got there."""
    home = Home.at(tmp_path / "template")
    home.init(base_port=free_stack_port())
    nothing_broken = ConfigCase("nothing broken", lambda home: None, "anything", command="eva")
    outcome = run_config_case(nothing_broken, home, tmp_path / "cases")
    assert not outcome.passed and outcome.started and outcome.exit_code is None
    assert "sonia-eva started and listened despite the configuration" in outcome.why
