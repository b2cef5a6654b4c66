"""From settings to a router: providers that exist, profiles that chain them, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonia.config import Settings
from sonia.errors import ConfigError
from sonia.home import Home
from sonia.services.router.assembly import build_profiles, build_providers, build_router


def settings(**router: object) -> Settings:
    return Settings(router=router)  # type: ignore[call-arg, arg-type]


def test_without_configuration_only_builtin_answers(tmp_path: Path) -> None:
    router = build_router(settings(), Home.at(tmp_path))
    assert set(router.providers) == {"builtin"}
    assert router.profiles == {"default": ["builtin"], "builtin": ["builtin"]}


def test_a_configured_model_server_is_the_default_with_no_silent_fallback(
        tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk-test\n")
    config = settings(openai_base_url="http://127.0.0.1:9/v1", openai_api_key_file="key")
    providers = build_providers(config, Home.at(tmp_path))
    assert set(providers) == {"builtin", "openai"}
    assert build_profiles(config, providers) == {
        "default": ["openai"], "builtin": ["builtin"], "openai": ["openai"]}, \
        "the builtin model answers for a broken server only where a profile names it"


def test_configured_profiles_add_and_replace(tmp_path: Path) -> None:
    config = settings(profiles={"default": ["builtin"], "offline": ["builtin"]})
    assert build_router(config, Home.at(tmp_path)).profiles["offline"] == ["builtin"]


@pytest.mark.parametrize(("router", "key"), [
    ({"profiles": {"fast": ["openai"]}}, "router.profiles.fast"),
    ({"profile": "missing"}, "router.profile"),
    ({"openai_base_url": "ftp://x"}, "router.openai_base_url"),
    ({"openai_base_url": "http://127.0.0.1:9/v1", "openai_api_key_file": "absent"},
     "router.openai_api_key_file"),
])
def test_what_cannot_work_refuses_to_start(tmp_path: Path, router: dict[str, object],
                                           key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build_router(settings(**router), Home.at(tmp_path))
    assert refused.value.key == key


@pytest.mark.parametrize("profiles", [
    {"fast": ["gpt"]}, {"fast": []}, {"Fast": ["builtin"]}, {"fast": ["builtin", "builtin"]},
])
def test_settings_refuse_malformed_profiles(profiles: dict[str, list[str]]) -> None:
    with pytest.raises(ValueError):
        settings(profiles=profiles)


def test_settings_refuse_an_unknown_speech_output() -> None:
    with pytest.raises(ValueError):
        Settings(voice={"tts": "festival"})  # type: ignore[call-arg, arg-type]
