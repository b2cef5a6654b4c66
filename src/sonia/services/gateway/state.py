"""What the gateway's route modules share: its database, user keys and policies.

`db` is the gateway's one database, as `[storage] url` says: its SQLite file
(`data/gateway.db`, schema `MIGRATIONS`), or the `gateway` schema on PostgreSQL
(`PG_MIGRATIONS`), where it then writes no file at all. It holds every table of
the gateway: chat sessions (`sessions`), paused and finished agent turns
(`turns`), console sessions (`web_sessions`) and the action store (`actions`),
each module's SQL the same on both backends (`kit.portable`). Their invariants
(the session caps, a paused turn resumed once, a console session valid wherever
it is presented) are the database's, so they hold for several gateways on one
PostgreSQL database as for one on SQLite."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from sonia.home import ApiKey
from sonia.kit.app import Hook, ServiceContext, run_sync
from sonia.kit.auth import UserKeys
from sonia.kit.portable import LedgerDatabase, open_ledger_database
from sonia.services.gateway import actions, sessions, turns, web_sessions

MIGRATIONS: list[str] = [*sessions.MIGRATIONS, sessions.DEFAULT_SESSIONS_MIGRATION,
                         *actions.MIGRATIONS, *turns.MIGRATIONS, *web_sessions.MIGRATIONS]
"""The gateway's SQLite schema; route modules append their tables as new migrations."""

PG_MIGRATIONS: list[str] = [*actions.PG_MIGRATIONS, *sessions.PG_MIGRATIONS,
                            *turns.PG_MIGRATIONS, *web_sessions.PG_MIGRATIONS]
"""The gateway's PostgreSQL schema (`gateway`). The action store came first (version 1,
when it alone was there), so a schema made then gains the other tables as versions
2 to 4; append, never reorder."""


@dataclass
class Gateway:
    ctx: ServiceContext
    db: LedgerDatabase
    keys: UserKeys
    session_policy: sessions.SessionPolicy
    credentials: web_sessions.Credentials
    on_startup: list[Hook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)
    on_turn_resumed: list[Callable[[str, dict[str, Any]], Awaitable[None]]] = field(
        default_factory=list)
    """Told (session id, event) when a paused chat turn went on after an approver's
    decision or its expiry: the session's open streams show it (`sessions_api`)."""

    @classmethod
    def build(cls, ctx: ServiceContext) -> Gateway:
        gw = ctx.settings.gateway
        db = open_ledger_database(ctx.home, ctx.settings, service="gateway",
                                  sqlite_migrations=MIGRATIONS, postgres_migrations=PG_MIGRATIONS)
        keys = UserKeys(ctx.home)
        return cls(
            ctx=ctx,
            db=db,
            keys=keys,
            on_startup=[run_sync(db.open)],
            on_shutdown=[run_sync(db.close)],  # hooks run in reverse: closed last
            credentials=web_sessions.Credentials(keys, db, gw.console_session_hours),
            session_policy=sessions.SessionPolicy(idle_seconds=gw.session_idle_seconds,
                                                  max_open=gw.max_sessions,
                                                  max_per_key=gw.max_sessions_per_key),
        )

    @property
    def user(self) -> Callable[[Request], Awaitable[ApiKey]]:
        """Dependency: any valid user key, or a console session made from one."""
        return self.credentials.dependency()

    @property
    def approver(self) -> Callable[[Request], Awaitable[ApiKey]]:
        """Dependency: an approver key (or its console session)."""
        return self.credentials.dependency("approver")
