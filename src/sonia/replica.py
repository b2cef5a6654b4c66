"""A replica home: a second home that serves the same deployment from other ports or
another host, all its services sharing the first home's PostgreSQL database.

Two homes are replicas of one deployment when their services accept each
other's calls and agree on everything the database does not hold:

shared (copied from the source, replaced on every run, so running it again after
`sonia keys create` or `keys revoke` on the source brings the keys across):
    secrets/tokens/*          a service knows its callers by these
    secrets/eva_grant_key.pem both EVAs sign grants with it; each OpenClaw
                              fetches the public half from its own EVA, so a
                              grant either EVA minted verifies at either OpenClaw
    secrets/api_keys.json     users and approvers are the same people at every
                              gateway (and own the same memories)
    secrets/backup.key        a backup of the shared database taken from one
                              home verifies in the other
    secrets/postgres_password the same `[storage] url` needs the same password
    policies/*.toml           the tool tiers and command allowlist: both EVAs
                              must decide an action alike
    sonia.toml                all of it but what is the host's or the process's own:
                              `base_port`, `ports`, `bind`, `binds`, `upstreams`
                              (`HOST_KEYS`: dropped when the replica is made,
                              the replica's own kept when it is synced again)

its own (never copied: these are one process's or one host's):
    data/       SQLite files (none is written while storage is PostgreSQL)
    logs/, run/ a service's logs and pid files, the supervisor's state
    workspace/  the files OpenClaw acts on. A grant runs once across every
                OpenClaw of the database (its ledger is there), in the
                workspace of the OpenClaw it was presented to; homes that must
                act on one set of files need that folder on shared storage,
                which is outside Sonia
    artifacts/, backups/

A replica is marked (`Home.replica_marker`, naming its source), and keys are made
and revoked only at the source (`Home.create_api_key` refuses on a replica): a
replica's copy is replaced at every sync. A home that stores in SQLite has no
replica (its ledgers are its own files); a home that exists with other tokens is
another deployment; a replica is not a source, and a source (tokens alike, no
marker: the arguments swapped) is not made a replica: all are refused.
TLS files are the host's own and are not copied; a `[tls]` that names relative
files needs them in the replica before it starts (`Home.check` says which).
"""

from __future__ import annotations

import stat
from pathlib import Path

import tomlkit

from sonia import SERVICES, files
from sonia.config import Settings
from sonia.errors import ConfigError
from sonia.home import PRIVATE_FILE_MODE, Home

__all__ = ["HOST_KEYS", "make_replica"]

HOST_KEYS = ("base_port", "ports", "bind", "binds", "upstreams")
"""Settings that are the host's or the process's own: never taken from the source."""


def make_replica(source: Home, target: Home, *, base_port: int | None = None) -> Settings:
    """Make `target` (new, or already a replica of `source`) a replica of `source`,
    listening from `base_port` (the source's when None: another host); its settings."""
    settings = source.check()
    if settings.storage.backend != "postgresql":
        raise ConfigError(f"{source.root} stores in SQLite files: a replica needs "
                          "[storage] url = \"postgresql://...\" in the source home",
                          key="storage.url")
    if target.root == source.root:
        raise ConfigError("a home is not its own replica", key="home")
    if source.replica_source() is not None:
        raise ConfigError(f"{source.root} is itself a replica (of "
                          f"{source.replica_source()}): make replicas from that home",
                          key="home")
    own: dict[str, object] = {}
    if target.exists:
        try:
            same = target.all_tokens() == source.all_tokens()
        except ConfigError:
            same = False
        if not same:
            raise ConfigError(f"{target.root} is a home with its own tokens, not a replica "
                              f"of {source.root}: choose a new folder", key="home")
        if target.replica_source() is None:
            raise ConfigError(f"{target.root} is not a replica but a home of this "
                              f"deployment (a source?): were --home and --replica-of "
                              "swapped?", key="home")
        mine = tomlkit.parse(target.config_file.read_text())
        own = {key: mine[key] for key in HOST_KEYS if key in mine}
    target.init(base_port=base_port or int(str(own.get("base_port", settings.base_port))))
    files.write_atomic(target.replica_marker, f"{source.root}\n".encode(), mode=0o644)
    for service in SERVICES:
        _copy_private(_read(source.token_file(service)), target.token_file(service))
    for path in (source.grant_key_file, source.api_keys_file, source.backup_key_file,
                 source.storage_password_file):
        if path.exists():
            _copy_private(_read(path), target.secrets / path.name)
    for policy in source.policies.glob("*.toml"):
        files.write_atomic(target.policies / policy.name, _read(policy), mode=_mode(policy))
    document = tomlkit.parse(source.config_file.read_text())
    for key in HOST_KEYS:
        document.pop(key, None)
    for key, value in own.items():
        document[key] = value
    document["base_port"] = base_port or own.get("base_port") or settings.base_port
    files.write_atomic(target.config_file, tomlkit.dumps(document).encode(),
                       mode=_mode(source.config_file))
    return target.check()


def _read(path: Path) -> bytes:
    """A source file's bytes; a link is refused (a replica holds copies, and a link to
    a secret would be copied frozen, or not at all when it dangles)."""
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link: a replica copies files; put the "
                          "file itself in the source home", key="home")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key="home") from None


def _copy_private(data: bytes, path: Path) -> None:
    files.write_atomic(path, data, mode=PRIVATE_FILE_MODE)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
