"""From settings to a working `Router`: which providers exist and which profiles chain them.

Providers:
  * `builtin` always exists (offline and deterministic);
  * `openai` exists when `router.openai_base_url` is set; its API key is read from
    `router.openai_api_key_file` (relative paths are relative to the home);
  * `llamacpp` exists when `router.llamacpp_model_path` is set (optional extra).

Profiles: unless configured, `default` is every configured model provider in
the order above, and `builtin` only when no model is configured: with a model
set up, an answer from the offline builtin would hide a broken model server, so
falling back to it takes a profile that names it (`default = ["openai",
"builtin"]`). Each provider also has a profile of its own name (just that one).
`router.profiles` adds profiles or replaces these. A profile naming a provider
that is not configured, or a `router.profile` that names no profile, refuses to
start (ConfigError, exit 2) instead of failing on the first request.
"""

from __future__ import annotations

from pathlib import Path

from sonia.config import Settings
from sonia.errors import ConfigError
from sonia.home import Home
from sonia.services.router.providers import (
    BuiltinProvider,
    LlamaCppProvider,
    OpenAIProvider,
    Provider,
)
from sonia.services.router.routing import Router


def _read_key(home: Home, name: str) -> str:
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = home.root / path
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the OpenAI API key file {path}: {exc.strerror}",
                          key="router.openai_api_key_file") from exc
    if not key:
        raise ConfigError(f"the OpenAI API key file {path} is empty",
                          key="router.openai_api_key_file")
    return key


def build_providers(settings: Settings, home: Home) -> dict[str, Provider]:
    config = settings.router
    providers: dict[str, Provider] = {"builtin": BuiltinProvider()}
    if config.openai_base_url:
        if not config.openai_base_url.startswith(("http://", "https://")):
            raise ConfigError(f"router.openai_base_url must be an http(s) URL, got "
                              f"{config.openai_base_url!r}", key="router.openai_base_url")
        api_key = _read_key(home, config.openai_api_key_file) if config.openai_api_key_file \
            else None
        providers["openai"] = OpenAIProvider(config.openai_base_url, config.openai_model,
                                             api_key, timeout=config.timeout_seconds)
    if config.llamacpp_model_path:
        providers["llamacpp"] = LlamaCppProvider(config.llamacpp_model_path)
    return providers


def build_profiles(settings: Settings, providers: dict[str, Provider]) -> dict[str, list[str]]:
    extra: list[str] = [name for name in ("openai", "llamacpp") if name in providers]
    profiles: dict[str, list[str]] = {"default": extra or ["builtin"]}
    profiles.update({name: [name] for name in providers})
    profiles.update({name: list(chain) for name, chain in settings.router.profiles.items()})
    return profiles


def build_router(settings: Settings, home: Home) -> Router:
    providers = build_providers(settings, home)
    return Router(providers, build_profiles(settings, providers),
                  timeout=settings.router.timeout_seconds,
                  quarantine_seconds=settings.router.quarantine_seconds,
                  default_profile=settings.router.profile)


__all__ = ["build_profiles", "build_providers", "build_router"]
