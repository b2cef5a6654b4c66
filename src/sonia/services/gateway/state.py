"""What the gateway's route modules share: its databases, user keys and policies.

`db` is the gateway's SQLite database (sessions, paused turns, console sessions,
and the action store). `actions_db` is where the action store lives: that same
database, or, when `[storage] url` names PostgreSQL, the `gateway` schema there
(the other tables are on SQLite still)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from sonia.home import ApiKey
from sonia.kit.app import Hook, ServiceContext, run_sync
from sonia.kit.auth import UserKeys
from sonia.kit.db import Database
from sonia.kit.portable import LedgerDatabase, open_ledger_database
from sonia.services.gateway import actions, sessions, turns, web_sessions

MIGRATIONS: list[str] = [*sessions.MIGRATIONS, sessions.DEFAULT_SESSIONS_MIGRATION,
                         *actions.MIGRATIONS, *turns.MIGRATIONS, *web_sessions.MIGRATIONS]
"""The gateway database's schema; route modules append their tables as new migrations."""


@dataclass
class Gateway:
    ctx: ServiceContext
    db: Database
    actions_db: LedgerDatabase
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
        db = Database(ctx.home.db_path("gateway"), MIGRATIONS)
        actions_db: LedgerDatabase = db
        opening: list[Hook] = []
        closing: list[Hook] = []
        if ctx.settings.storage.backend == "postgresql":
            actions_db = open_ledger_database(ctx.home, ctx.settings, service="gateway",
                                              sqlite_migrations=(),
                                              postgres_migrations=actions.PG_MIGRATIONS)
            opening, closing = [run_sync(actions_db.open)], [run_sync(actions_db.close)]
        keys = UserKeys(ctx.home)
        return cls(
            ctx=ctx,
            db=db,
            actions_db=actions_db,
            keys=keys,
            on_startup=opening,
            on_shutdown=closing,
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
