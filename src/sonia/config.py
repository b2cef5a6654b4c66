"""Settings, declared once: `sonia.toml` in the home plus `SONIA_*` environment variables.

Every section forbids unknown keys and every value is typed, so a typo or an
unsafe value stops start-up with a `ConfigError` that names the key; the CLI
turns it into exit code 2. Environment variables use `__` between a section and
its key: `SONIA_GATEWAY__MAX_SESSIONS=8`.

Services listen on loopback unless told otherwise, and a service told to listen
anywhere else must serve TLS (`[tls] cert_file` and `key_file`): service tokens
and conversations never cross a network in clear text. Callers reach another
host only through an `https://` upstream, checked against `[tls] ca_file`.

`[storage] url` chooses where ledgers live: `sqlite` (the embedded default) or a
`postgresql://` URL. A URL that carries a password is refused naming the key: the
password is read from `secrets/postgres_password`, which `Home.check` holds to
the same 0600 rule as every other secret.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sonia import SERVICES
from sonia.errors import ConfigError

PROVIDERS: tuple[str, ...] = ("builtin", "openai", "llamacpp")
"""The model providers a routing profile may name (DESIGN.md, "Conversation")."""

PORT_OFFSETS: dict[str, int] = {
    "gateway": 0, "router": 10, "memory": 20, "voice": 30, "openclaw": 40, "eva": 50,
}
"""Each service's port is `base_port` plus its offset (DESIGN.md: 7000, 7010, ...)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyedValueError(ValueError):
    """A failure of a check that spans several settings, naming the one key to fix (a
    model validator's error has no location of its own)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class GatewaySettings(_Section):
    max_sessions: int = Field(64, ge=1, le=100_000, description="concurrent open sessions")
    session_idle_seconds: float = Field(900.0, gt=0, description="idle sessions expire after")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body")
    max_message_chars: int = Field(32_768, ge=1, description="largest chat message")
    action_ttl_seconds: float = Field(900.0, gt=0, description="pending approvals expire after")
    max_sessions_per_key: int = Field(
        32, ge=1, le=100_000,
        description="open sessions one API key may hold; below max_sessions, so one key "
                    "cannot take every slot")
    max_streams_per_session: int = Field(
        4, ge=1, le=1000, description="WebSocket streams open at once on one session")
    max_pending_actions_per_key: int = Field(
        32, ge=1, le=100_000,
        description="actions of one key awaiting approval; more proposals answer 429")
    invalid_proposals_per_minute: int = Field(
        600, ge=1, le=1_000_000,
        description="proposals of one key that EVA refuses (400/403/404), per minute; "
                    "past it the key's proposals answer 429 with Retry-After")
    agent_tools: bool = Field(True, description="offer Sonia's tools to the model in /v1/chat")
    agent_max_steps: int = Field(6, ge=1, le=64, description="model steps per chat turn")
    agent_max_tool_calls: int = Field(8, ge=1, le=64, description="tool calls per chat turn")
    agent_turn_retention_days: float = Field(
        30.0, gt=0, le=36_500,
        description="turn records are deleted this long after their last change (a paused "
                    "turn: this long after its approval's deadline)")
    console_session_hours: float = Field(
        12.0, gt=0, le=24 * 30,
        description="a console sign-in (API key exchanged for a cookie) lasts this long")


class RouterSettings(_Section):
    profile: str = Field("default", description="routing profile used when a request names none")
    timeout_seconds: float = Field(30.0, gt=0, description="per provider call")
    quarantine_seconds: float = Field(30.0, gt=0, description="a failing provider rests this long")
    openai_base_url: str | None = Field(None, description="an OpenAI-compatible server")
    openai_model: str = Field("default", description="model name sent to that server")
    openai_api_key_file: str | None = Field(None, description="file holding its API key")
    llamacpp_model_path: str | None = Field(None, description="a GGUF file for llamacpp")
    profiles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="routing profiles: name -> providers in fallback order (builtin, openai, "
                    "llamacpp); without one, `default` is every configured provider, then builtin")

    @field_validator("profiles")
    @classmethod
    def _known_providers(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, chain in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
                raise ValueError(f"profile name {name!r} must match [a-z][a-z0-9_-]{{0,31}}")
            if not chain:
                raise ValueError(f"profile {name!r} names no provider")
            unknown = [p for p in chain if p not in PROVIDERS]
            if unknown:
                raise ValueError(f"profile {name!r} names unknown providers {unknown}; "
                                 f"providers are {', '.join(PROVIDERS)}")
            if len(set(chain)) != len(chain):
                raise ValueError(f"profile {name!r} names a provider twice")
        return v


class VoiceSettings(_Section):
    tts: str = Field("auto", description="auto | espeak-ng | none")
    stt_base_url: str | None = Field(None, description="OpenAI-compatible transcription server")

    @field_validator("tts")
    @classmethod
    def _known_tts(cls, v: str) -> str:
        if v not in {"auto", "espeak-ng", "none"}:
            raise ValueError("must be one of auto, espeak-ng, none")
        return v


class OpenClawSettings(_Section):
    shell_timeout_seconds: float = Field(10.0, gt=0, le=600,
                                         description="shell.run is killed (whole group) after")
    max_output_bytes: int = Field(65_536, ge=1024, description="tool output kept per stream")
    max_file_bytes: int = Field(10_485_760, ge=1024, description="largest file read or written")
    sandbox: str = Field("auto", description="auto | bwrap | rlimits")
    allow_unsandboxed: bool = Field(
        False, description="run shell.run without bubblewrap (rlimits, as nobody when root); "
                           "false: shell.run is refused with SANDBOX_UNAVAILABLE")

    @field_validator("sandbox")
    @classmethod
    def _known_sandbox(cls, v: str) -> str:
        if v not in {"auto", "bwrap", "rlimits"}:
            raise ValueError("must be one of auto, bwrap, rlimits")
        return v

    @model_validator(mode="after")
    def _unsandboxed_is_explicit(self) -> OpenClawSettings:
        """`rlimits` runs commands with no sandbox: the operator must say so twice."""
        if self.sandbox == "rlimits" and not self.allow_unsandboxed:
            raise ValueError("sandbox = 'rlimits' runs commands without a sandbox: also set "
                             "allow_unsandboxed = true, or use auto or bwrap")
        return self


class EvaSettings(_Section):
    grant_ttl_seconds: float = Field(30.0, gt=0, le=300,
                                     description="execution grants expire after")


class TlsSettings(_Section):
    cert_file: str | None = Field(
        None, description="PEM certificate (chain) every service of this home serves HTTPS "
                          "with; relative to the home; needs key_file")
    key_file: str | None = Field(
        None, description="its PEM private key, relative to the home; no access for others")
    ca_file: str | None = Field(
        None, description="PEM CA bundle that callers trust for https:// services (this "
                          "home's own and https upstreams); unset: the system's store")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        """A certificate without its key (or the reverse) cannot serve anything."""
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            raise KeyedValueError(f"tls.{missing}",
                                  f"set tls.cert_file and tls.key_file together; "
                                  f"tls.{missing} is missing")
        return self

    @property
    def enabled(self) -> bool:
        """Whether this home's services serve HTTPS."""
        return self.cert_file is not None and self.key_file is not None


class LogSettings(_Section):
    max_bytes: int = Field(
        67_108_864, ge=4096, le=1 << 40,
        description="a file log (logs/<service>.log, supervisor.log) rolls over past this size")
    keep: int = Field(
        5, ge=1, le=10_000,
        description="rolled-over files kept per log (<name>.log.1 newest ... .N oldest)")


class SupervisorSettings(_Section):
    ready_timeout_seconds: float = Field(60.0, gt=0, description="`sonia up` waits this long")
    stop_grace_seconds: float = Field(10.0, gt=0, description="SIGTERM to SIGKILL escalation")
    restart_backoff_initial: float = Field(0.5, gt=0, description="first restart delay")
    restart_backoff_max: float = Field(10.0, gt=0, description="restart delay doubles up to")


class BackupSettings(_Section):
    interval_hours: float = Field(6.0, ge=0, description="0 turns scheduled backups off")
    retention: int = Field(8, ge=1, description="scheduled backups kept")


STORAGE_PASSWORD_FILE = "secrets/postgres_password"
"""Where the PostgreSQL password is, relative to the home: never in the TOML."""


class StorageSettings(_Section):
    url: str = Field(
        "sqlite",
        description="where the ledgers live: sqlite (embedded files in data/, the default) or "
                    "postgresql://USER@HOST:PORT/DB (memory, EVA, OpenClaw and the gateway's "
                    f"actions so far); the password is read from {STORAGE_PASSWORD_FILE}, "
                    "never from this file")

    @field_validator("url")
    @classmethod
    def _sqlite_or_postgresql(cls, v: str) -> str:
        if v == "sqlite":
            return v
        parts = urlsplit(v)
        if parts.scheme not in {"postgresql", "postgres"}:
            raise KeyedValueError(
                "storage.url", "must be sqlite or a postgresql://USER@HOST:PORT/DB URL")
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise KeyedValueError("storage.url", "has a port that is not a number") from None
        query = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if parts.password is not None or "password" in query or "passfile" in query:
            # Said without echoing the URL: it holds the secret.
            raise KeyedValueError(
                "storage.url", f"must not carry a password: put it in {STORAGE_PASSWORD_FILE} "
                               f"(mode 0600) and remove it from the URL")
        if not parts.path.strip("/") and "dbname" not in query:
            raise KeyedValueError("storage.url", "names no database (postgresql://USER@HOST/DB)")
        return v

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return "sqlite" if self.url == "sqlite" else "postgresql"


class Settings(BaseSettings):
    """The whole configuration of one home."""

    model_config = SettingsConfigDict(
        env_prefix="SONIA_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    bind: str = Field(
        "127.0.0.1",
        description="address every service listens on; other than loopback only with [tls]")
    binds: dict[str, str] = Field(
        default_factory=dict,
        description="per-service listen addresses, overriding bind (other than loopback only "
                    "with [tls]): service -> IP address")
    base_port: int = Field(7000, ge=1024, le=65_000, description="gateway port; others at offsets")
    ports: dict[str, int] = Field(default_factory=dict, description="per-service port overrides")
    upstreams: dict[str, str] = Field(
        default_factory=dict,
        description="where callers reach a service when not at its own address: service -> "
                    "http://<loopback>:PORT (e.g. a proxy) or https://HOST:PORT (another host)")
    log_level: str = Field("info", description="debug, info, warning or error")
    gateway: GatewaySettings = GatewaySettings()  # type: ignore[call-arg]
    router: RouterSettings = RouterSettings()  # type: ignore[call-arg]
    voice: VoiceSettings = VoiceSettings()  # type: ignore[call-arg]
    openclaw: OpenClawSettings = OpenClawSettings()  # type: ignore[call-arg]
    eva: EvaSettings = EvaSettings()  # type: ignore[call-arg]
    supervisor: SupervisorSettings = SupervisorSettings()  # type: ignore[call-arg]
    backup: BackupSettings = BackupSettings()  # type: ignore[call-arg]
    tls: TlsSettings = TlsSettings()  # type: ignore[call-arg]
    logs: LogSettings = LogSettings()  # type: ignore[call-arg]
    storage: StorageSettings = StorageSettings()  # type: ignore[call-arg]

    @field_validator("bind")
    @classmethod
    def _an_address(cls, v: str) -> str:
        return _ip_address(v)

    @field_validator("binds")
    @classmethod
    def _service_addresses(cls, v: dict[str, str]) -> dict[str, str]:
        for name, address in v.items():
            if name not in SERVICES:
                raise ValueError(f"unknown service {name!r}; services are {', '.join(SERVICES)}")
            _ip_address(address)
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return v.lower()

    @field_validator("ports")
    @classmethod
    def _known_services(cls, v: dict[str, int]) -> dict[str, int]:
        for name, port in v.items():
            if name not in SERVICES:
                raise ValueError(f"unknown service {name!r}; services are {', '.join(SERVICES)}")
            if not 1024 <= port <= 65_535:
                raise ValueError(f"port {port} of {name} is outside 1024-65535")
        return v

    @field_validator("upstreams")
    @classmethod
    def _upstreams_in_clear_only_on_loopback(cls, v: dict[str, str]) -> dict[str, str]:
        for name, url in v.items():
            if name not in SERVICES:
                raise ValueError(f"unknown service {name!r}; services are {', '.join(SERVICES)}")
            if re.fullmatch(r"http://(127\.\d+\.\d+\.\d+|\[::1\]):(\d{4,5})", url):
                continue
            if re.fullmatch(r"https://([A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
                            r"|\[[0-9A-Fa-f:.]+\]):(\d{1,5})", url):
                continue
            raise ValueError(f"upstream of {name} must be http://<loopback>:<port> or "
                             f"https://<host>:<port> (another host only over TLS), not {url!r}")
        return v

    @model_validator(mode="after")
    def _beyond_loopback_only_with_tls(self) -> Settings:
        """A service that listens beyond loopback serves TLS: tokens and conversations
        never cross a network in clear text."""
        if self.tls.enabled:
            return self
        for name in SERVICES:
            address = self.bind_of(name)
            if not ipaddress.ip_address(address).is_loopback:
                key = f"binds.{name}" if name in self.binds else "bind"
                raise KeyedValueError(
                    key, f"{name} would listen on {address}, which is not a loopback address: "
                         f"a service reachable from other hosts must serve TLS; set "
                         f"tls.cert_file and tls.key_file, or listen on 127.0.0.1")
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        seen: dict[int, str] = {}
        for name in SERVICES:
            port = self.port_of(name)
            if port in seen:
                raise ValueError(f"{seen[port]} and {name} both use port {port}")
            seen[port] = name
        return self

    def port_of(self, service: str) -> int:
        return self.ports.get(service, self.base_port + PORT_OFFSETS[service])

    def bind_of(self, service: str) -> str:
        """The address `service` listens on."""
        return self.binds.get(service, self.bind)

    @property
    def scheme(self) -> str:
        """`https` when this home's services serve TLS, else `http`."""
        return "https" if self.tls.enabled else "http"

    def url_of(self, service: str) -> str:
        """Where this host reaches a service of its own home (health checks, the
        supervisor, gates): its listen address, or loopback for a wildcard one."""
        address = ipaddress.ip_address(self.bind_of(service))
        if address.is_unspecified:
            address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port_of(service)}"

    def upstream_of(self, service: str) -> str:
        """Where other services call it: its own address unless an upstream is configured."""
        return self.upstreams.get(service, self.url_of(service))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (explicit) > environment > sonia.toml; no dotenv, no secrets dir.
        toml = _TOML_FILE.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address; use 127.0.0.1") from None
    return value


class _TomlPath:
    """Which file the next `load_settings` call reads (pydantic-settings asks a class hook)."""

    def __init__(self) -> None:
        self._path: Path | None = None

    def get(self) -> Path | None:
        return self._path

    def set(self, path: Path | None) -> None:
        self._path = path


_TOML_FILE = _TomlPath()


def _first_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(root)"
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedValueError):  # its key is the whole dotted name
        return ConfigError(f"setting {cause.key!r} is invalid: {cause}", key=cause.key)
    if err["type"] == "extra_forbidden":
        msg = f"unknown setting {key!r}: remove it or check its spelling"
    else:
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        msg = f"setting {key!r} is invalid{shown}: {err['msg']}"
    return ConfigError(msg, key=key)


def load_settings(config_file: Path | None, **overrides: Any) -> Settings:
    """Read settings from `config_file` (if any) and the environment, or raise ConfigError."""
    if config_file is not None and config_file.exists():
        try:
            tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file} is not valid TOML: {exc}", key=None) from exc
    _TOML_FILE.set(config_file if config_file is not None and config_file.exists() else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _first_error(exc) from exc
    finally:
        _TOML_FILE.set(None)
