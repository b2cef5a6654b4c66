"""Running commands without a sandbox is an explicit, two-key decision of the operator."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonia.config import Settings, load_settings
from sonia.errors import ConfigError


def settings_from(tmp_path: Path, text: str) -> Settings:
    config = tmp_path / "sonia.toml"
    config.write_text(text)
    return load_settings(config)


def test_the_default_never_runs_unsandboxed(tmp_path: Path) -> None:
    settings = load_settings(None)
    assert settings.openclaw.sandbox == "auto" and settings.openclaw.allow_unsandboxed is False


def test_rlimits_alone_is_refused_at_start_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, '[openclaw]\nsandbox = "rlimits"\n')
    assert info.value.key is not None and info.value.key.startswith("openclaw")
    assert "allow_unsandboxed" in str(info.value)


def test_rlimits_with_the_opt_in_is_accepted(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, '[openclaw]\nsandbox = "rlimits"\n'
                                       'allow_unsandboxed = true\n')
    assert settings.openclaw.allow_unsandboxed is True


def test_the_opt_in_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, '[openclaw]\nallow_unsandboxed = "yes please"\n')
    assert info.value.key == "openclaw.allow_unsandboxed"
