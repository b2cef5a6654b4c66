"""The home directory: one folder that holds everything a deployment owns.

    sonia.toml   configuration          secrets/   0700; tokens/<service>, grant key, user
                                                   keys, backup.key (signs backups)
    data/        SQLite databases       workspace/ the only folder tools may touch
    policies/    tool tiers, allowlist  logs/      <service>.log JSON lines
    run/         pid files, state       artifacts/ gate evidence, release bundles

`Home.init()` creates it; `Home.check()` refuses a home whose secrets are readable
by others, whose tokens are missing, short or shared, or whose TLS files (when
configured) are missing, open to others, or do not make a certificate and its key.

`data/` and `logs/` hold conversations, memories and request traces: they are 0700
and every file in them 0600. Service processes and the supervisor run under
PRIVATE_UMASK, so SQLite files (with their -wal and -shm), logs and pid files are
created private; `Home.make_private()` tightens a home made before that (issue 10,
finding 8).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import ssl
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomlkit

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sonia import SERVICES, files
from sonia.config import STORAGE_PASSWORD_FILE, Settings, TlsSettings, load_settings
from sonia.errors import ConfigError

TOKEN_BYTES = 32
"""256-bit service tokens and user keys."""
MIN_TOKEN_CHARS = 43
"""urlsafe base64 of 32 bytes; anything shorter is refused."""
ROLES = ("user", "approver")
PRIVATE_UMASK = 0o077
"""Files a Sonia process creates are its owner's alone (0600 files, 0700 folders)."""
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

DEFAULT_CONFIG = """\
# Sonia configuration. Every key is optional; unknown keys refuse to start.
bind = "127.0.0.1"
base_port = {base_port}

[gateway]
max_sessions = 64
session_idle_seconds = 900

[backup]
interval_hours = 6
retention = 8
"""


def _write_private(path: Path, data: bytes) -> None:
    """Create or replace `path` with mode 0600, atomically."""
    files.write_atomic(path, data, mode=0o600)


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: str
    created_at: float


@dataclass(frozen=True)
class KeyRecord:
    """What may be shown of a key: never the key, nor its hash."""

    id: str
    role: str
    created_at: float
    revoked_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "state": "revoked" if self.revoked_at
                else "active"}


@dataclass(frozen=True)
class Home:
    """Paths of one home; cheap to build, touches the disk only when asked."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> Home:
        return cls(Path(root).expanduser().resolve())

    # layout -----------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.root / "sonia.toml"

    @property
    def replica_marker(self) -> Path:
        """Present in a replica home (`sonia init --replica-of`): names its source home,
        where the deployment's keys are made and revoked (`replica.make_replica`)."""
        return self.root / "replica-of"

    def replica_source(self) -> str | None:
        """The source home a replica was made from, as written; None for a source home."""
        try:
            return self.replica_marker.read_text(encoding="utf-8").strip() or "?"
        except FileNotFoundError:
            return None

    def _refuse_key_change_on_a_replica(self) -> None:
        """Keys are the deployment's: a replica's copy is replaced by the next sync, so a
        key made or revoked here alone would be undone, or would differ between gateways."""
        source = self.replica_source()
        if source is not None:
            raise ConfigError(f"{self.root} is a replica of {source}: make and revoke keys "
                              "there, then run `sonia init --replica-of` here again",
                              key="home")

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def tokens(self) -> Path:
        return self.secrets / "tokens"

    @property
    def grant_key_file(self) -> Path:
        return self.secrets / "eva_grant_key.pem"

    @property
    def api_keys_file(self) -> Path:
        return self.secrets / "api_keys.json"

    @property
    def backup_key_file(self) -> Path:
        """The HMAC key that signs this home's backup manifests (backup.py)."""
        return self.secrets / "backup.key"

    @property
    def storage_password_file(self) -> Path:
        """The PostgreSQL password of `[storage] url` (never in sonia.toml)."""
        return self.root / STORAGE_PASSWORD_FILE

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def supervisor_state_file(self) -> Path:
        """What the supervisor says runs (pids, since when, restarts); written by it
        (`supervisor.state`), read by the CLI, the gates and the gateway's system page."""
        return self.run / "state.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    def resolve(self, name: str) -> Path:
        """A file the configuration names: absolute, or relative to the home."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.root / path

    def db_path(self, service: str) -> Path:
        return self.data / f"{service}.db"

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def token_file(self, service: str) -> Path:
        return self.tokens / service

    @property
    def exists(self) -> bool:
        return self.config_file.exists() and self.tokens.is_dir()

    # creation ---------------------------------------------------------------
    def init(self, *, base_port: int = 7000) -> None:
        """Lay out the home; existing files (config, tokens, keys) are kept, never rotated."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.data, self.workspace, self.policies, self.logs, self.run,
                       self.artifacts, self.backups):
            folder.mkdir(exist_ok=True)
        self.make_private()
        self.secrets.mkdir(mode=0o700, exist_ok=True)
        self.tokens.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        os.chmod(self.tokens, 0o700)
        for service in SERVICES:
            path = self.token_file(service)
            if not path.exists():
                _write_private(path, secrets.token_urlsafe(TOKEN_BYTES).encode())
        if not self.grant_key_file.exists():
            # Imported here: cryptography is 8 MiB of every process that imports it,
            # and only EVA and OpenClaw (and `init`) need it.
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_private(self.grant_key_file, pem)
        if not self.api_keys_file.exists():
            _write_private(self.api_keys_file, b"[]\n")
        if not self.backup_key_file.exists():
            _write_private(self.backup_key_file, secrets.token_hex(TOKEN_BYTES).encode())
        if not self.config_file.exists():
            self.config_file.write_text(DEFAULT_CONFIG.format(base_port=base_port))
        self._install_default_policies()

    @property
    def private_dirs(self) -> tuple[Path, ...]:
        """Folders whose contents only the owner may read: databases, logs, pid files."""
        return (self.data, self.logs, self.run)

    def make_private(self) -> None:
        """chmod 0700 the private folders and 0600 every file in them (not following
        symlinks); run at init, by the supervisor before it starts anything, and by
        `sonia run` (other services of the home may be running: a file that goes away
        meanwhile, such as a SQLite journal, is no error)."""
        for folder in self.private_dirs:
            if not folder.is_dir() or folder.is_symlink():
                continue
            os.chmod(folder, PRIVATE_DIR_MODE)
            for path in folder.rglob("*"):
                try:
                    if path.is_symlink():
                        continue
                    if path.is_dir():
                        os.chmod(path, PRIVATE_DIR_MODE)
                    elif path.is_file():
                        os.chmod(path, PRIVATE_FILE_MODE)
                except FileNotFoundError:
                    continue

    def _install_default_policies(self) -> None:
        """Copy the shipped policy files (tool tiers, command allowlist) where none exist."""
        from importlib.resources import files

        for item in files("sonia.policies").iterdir():
            target = self.policies / item.name
            if item.name.endswith(".toml") and not target.exists():
                target.write_text(item.read_text())

    # validation -------------------------------------------------------------
    def settings(self) -> Settings:
        """Load and validate this home's configuration (ConfigError when unusable)."""
        if not self.config_file.exists():
            raise ConfigError(f"{self.config_file} does not exist: run `sonia init`", key="home")
        return load_settings(self.config_file)

    def configure(self, values: Mapping[str, Mapping[str, Any]]) -> Settings:
        """Set keys of sonia.toml, `{table: {key: value}}` (None removes a key), keeping
        its comments and everything else; the validated settings. The file is put back
        as it was when the result does not validate (ConfigError)."""
        before = self.config_file.read_text()
        mode = stat.S_IMODE(self.config_file.stat().st_mode)
        document = tomlkit.parse(before)
        for name, keys in values.items():
            table = document.setdefault(name, tomlkit.table())
            if not isinstance(table, dict):
                raise ConfigError(f"{name} in {self.config_file} is not a table", key=name)
            for key, value in keys.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        files.write_atomic(self.config_file, tomlkit.dumps(document).encode(), mode=mode)
        try:
            return self.check()
        except ConfigError:
            files.write_atomic(self.config_file, before.encode(), mode=mode)
            raise

    def check(self) -> Settings:
        """Validate configuration and secrets; the first problem raises ConfigError."""
        settings = self.settings()
        self._check_private_dir(self.secrets, "secrets")
        self._check_private_dir(self.tokens, "secrets/tokens")
        seen: dict[str, str] = {}
        for service in SERVICES:
            token = self.read_token(service)
            if token in seen:
                raise ConfigError(
                    f"services {seen[token]} and {service} share a token: "
                    f"delete {self.token_file(service)} and run `sonia init` to make a new one",
                    key=f"secrets.tokens.{service}",
                )
            seen[token] = service
        for path in (self.grant_key_file, self.api_keys_file, self.storage_password_file):
            if path.exists():
                self._check_private_file(path, f"secrets/{path.name}")
        self._check_tls(settings.tls)
        return settings

    def _check_tls(self, tls: TlsSettings) -> None:
        """The certificate and key load as a pair, the key is its owner's (and perhaps a
        group's, such as ssl-cert) alone, and the CA bundle loads: so a service with a
        broken TLS setup refuses to start (exit 2) instead of failing its first caller."""
        if tls.ca_file is not None:
            ca = self._readable(self.resolve(tls.ca_file), "tls.ca_file")
            try:
                ssl.create_default_context(cafile=str(ca))
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"{ca} holds no usable PEM CA certificate: {exc}",
                                  key="tls.ca_file") from exc
        if tls.cert_file is None or tls.key_file is None:
            return
        cert = self._readable(self.resolve(tls.cert_file), "tls.cert_file")
        key = self._readable(self.resolve(tls.key_file), "tls.key_file")
        mode = stat.S_IMODE(key.stat().st_mode)
        if mode & 0o027:
            raise ConfigError(f"the TLS key {key} has mode {mode:o}: others may read it (or "
                              f"its group write it); run `chmod 600 {key}`", key="tls.key_file")
        try:
            # A password callback, so an encrypted key fails here instead of prompting.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                cert, key, password=lambda: b"")
        except ssl.SSLError as exc:
            raise ConfigError(f"{cert} and {key} are not a PEM certificate and its "
                              f"unencrypted private key: {exc.reason or exc}",
                              key="tls.key_file") from exc

    @staticmethod
    def _readable(path: Path, key: str) -> Path:
        try:
            with open(path, "rb"):
                return path
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from exc

    def _check_private_dir(self, path: Path, key: str) -> None:
        if not path.is_dir():
            raise ConfigError(f"{path} is missing: run `sonia init`", key=key)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} has mode {mode:o} and is open to other users: run `chmod 700 {path}`",
                key=key,
            )

    def _check_private_file(self, path: Path, key: str) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} has mode {mode:o} and is readable by others: run `chmod 600 {path}`",
                key=key,
            )

    # secrets ----------------------------------------------------------------
    def read_token(self, service: str) -> str:
        """The service token of `service`, checked for presence, privacy and length."""
        path = self.token_file(service)
        key = f"secrets.tokens.{service}"
        if not path.exists():
            raise ConfigError(f"token file {path} is missing: run `sonia init`", key=key)
        self._check_private_file(path, key)
        token = path.read_text().strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"token in {path} is {len(token)} characters, shorter than {MIN_TOKEN_CHARS}: "
                f"delete it and run `sonia init`",
                key=key,
            )
        return token

    def storage_password(self) -> str | None:
        """The PostgreSQL password (`secrets/postgres_password`, first line), or None when
        there is no such file (the server trusts the connection some other way: a
        unix socket's peer authentication, a certificate)."""
        path = self.storage_password_file
        if not path.exists():
            return None
        self._check_private_file(path, "secrets/postgres_password")
        lines = path.read_text().splitlines()
        password = lines[0] if lines else ""
        if not password:
            raise ConfigError(f"{path} is empty: write the password on its first line, or "
                              f"delete the file", key="secrets/postgres_password")
        return password

    def write_storage_password(self, password: str) -> None:
        """Keep the PostgreSQL password where `storage_password` reads it (0600)."""
        self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(self.storage_password_file, (password + "\n").encode())

    def all_tokens(self) -> dict[str, str]:
        return {service: self.read_token(service) for service in SERVICES}

    def grant_private_key(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._check_private_file(self.grant_key_file, "secrets/eva_grant_key.pem")
        key = serialization.load_pem_private_key(self.grant_key_file.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("the EVA grant key is not an Ed25519 key", key="secrets")
        return key

    # user API keys ----------------------------------------------------------
    def create_api_key(self, role: str, key_id: str | None = None) -> str:
        """Make a user key with `role`; only its SHA-256 is stored. Returns the key once.

        `key_id` re-issues a lost key under its old id: memories and sessions belong to
        the key id (its principal), so the person keeps them with a new secret. The id
        must be free or revoked (revoke the lost key first, `sonia keys revoke`)."""
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {role!r}", key="role")
        self._refuse_key_change_on_a_replica()
        with self._api_keys_locked():
            records = self._read_api_key_records()
            if key_id is None:
                key_id = secrets.token_hex(6)
            elif len(key_id) != 12 or any(c not in "0123456789abcdef" for c in key_id):
                raise ConfigError(f"a key id is 12 lower-case hex digits, not {key_id!r}",
                                  key="id")
            elif any(r.get("id") == key_id and not r.get("revoked_at") for r in records):
                raise ConfigError(f"key id {key_id} is in use; a re-issued id must be free "
                                  "or revoked", key="id")
            key = f"sk-sonia-{key_id}-{secrets.token_urlsafe(TOKEN_BYTES)}"
            records = [r for r in records if r.get("id") != key_id]
            records.append({
                "id": key_id,
                "role": role,
                "sha256": hashlib.sha256(key.encode()).hexdigest(),
                "created_at": time.time(),
            })
            self._write_api_key_records(records)
        return key

    def api_keys(self) -> list[KeyRecord]:
        """Every key ever made here (revoked ones too, with when), oldest first; never a
        secret nor its hash."""
        return [KeyRecord(id=str(r["id"]), role=str(r["role"]),
                          created_at=float(str(r["created_at"])),
                          revoked_at=None if r.get("revoked_at") is None
                          else float(str(r["revoked_at"])))
                for r in self._read_api_key_records()]

    def revoke_api_key(self, key_id: str) -> KeyRecord | None:
        """Revoke the key `key_id` at once (the gateway re-reads the key file on every
        request, and console sessions die with their key); None when no key has that id.
        Revoking a revoked key changes nothing. The record stays, so the id keeps naming
        its owner in audit records and can be re-issued (`create_api_key(key_id=...)`)."""
        self._refuse_key_change_on_a_replica()
        with self._api_keys_locked():
            records = self._read_api_key_records()
            found = next((r for r in records if r.get("id") == key_id), None)
            if found is None:
                return None
            if not found.get("revoked_at"):
                found["revoked_at"] = time.time()
                self._write_api_key_records(records)
        return next(k for k in self.api_keys() if k.id == key_id)

    @contextlib.contextmanager
    def _api_keys_locked(self) -> Iterator[None]:
        """One writer of the key file at a time (the CLI and the gateway's revoke route
        both read, change and write it)."""
        self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.secrets / "api_keys.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write_api_key_records(self, records: list[dict[str, object]]) -> None:
        _write_private(self.api_keys_file, (json.dumps(records, indent=1) + "\n").encode())

    def _read_api_key_records(self) -> list[dict[str, object]]:
        if not self.api_keys_file.exists():
            return []
        records = json.loads(self.api_keys_file.read_text() or "[]")
        if not isinstance(records, list):
            raise ConfigError(f"{self.api_keys_file} is not a JSON list", key="secrets")
        return records

    def api_key_table(self) -> list[tuple[bytes, ApiKey]]:
        """(sha256 digest, key) for every user key in force (revoked ones are left out)."""
        return [
            (bytes.fromhex(str(r["sha256"])),
             ApiKey(id=str(r["id"]), role=str(r["role"]), created_at=float(str(r["created_at"]))))
            for r in self._read_api_key_records() if not r.get("revoked_at")
        ]


def match_api_key(table: list[tuple[bytes, ApiKey]], presented: str) -> ApiKey | None:
    """Find the key whose hash matches, comparing every entry in constant time."""
    digest = hashlib.sha256(presented.encode()).digest()
    found: ApiKey | None = None
    for stored, key in table:
        if hmac.compare_digest(stored, digest):
            found = key
    return found
