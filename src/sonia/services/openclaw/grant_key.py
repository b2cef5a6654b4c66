"""EVA's public grant key, as OpenClaw gets it: over the wire, never from EVA's secrets.

OpenClaw must be able to check grants but never mint one, so it does not read
the home's private key file: it asks EVA (`GET /v1/grant-key`) at start-up, in
the background with a growing pause between attempts, and again on first use if
it has none yet. Until it has the key OpenClaw is not ready, and an execute
request answers 503 UNAVAILABLE instead of guessing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sonia.actions.grants import GrantVerifier, load_public_key
from sonia.errors import ApiError, ConfigError, Unavailable
from sonia.kit.client import ServiceClient

log = logging.getLogger("sonia.openclaw.grant_key")

FIRST_PAUSE_SECONDS = 0.1
MAX_PAUSE_SECONDS = 5.0
FETCH_TIMEOUT_SECONDS = 3.0


class GrantKeySource:
    """Holds the verifier built from EVA's published key once it has been fetched."""

    def __init__(self, eva: ServiceClient) -> None:
        self._eva = eva
        self._verifier: GrantVerifier | None = None
        self._fingerprint = ""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        return self._verifier is not None

    async def _fetch(self) -> GrantVerifier:
        body: Any = await self._eva.request("GET", "/v1/grant-key",
                                            timeout=FETCH_TIMEOUT_SECONDS)
        if not isinstance(body, dict):
            raise Unavailable("EVA answered the grant key with something that is not an object")
        try:
            key = load_public_key(body)
        except ConfigError as exc:
            raise Unavailable(f"EVA's grant key is unreadable: {exc}") from exc
        self._fingerprint = str(body.get("x", ""))[:12]
        return GrantVerifier(key)

    async def verifier(self) -> GrantVerifier:
        """The verifier, fetching the key now if the background task has not yet."""
        if self._verifier is not None:
            return self._verifier
        async with self._lock:
            if self._verifier is None:
                self._verifier = await self._fetch()
                log.info("grant key loaded from EVA (x=%s...)", self._fingerprint)
            return self._verifier

    async def _keep_trying(self) -> None:
        pause = FIRST_PAUSE_SECONDS
        while self._verifier is None:
            try:
                await self.verifier()
                return
            except ApiError as exc:
                log.warning("grant key not available yet: %s; retrying in %.1fs",
                            exc.detail, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)

    def start(self) -> None:
        """Start fetching in the background (a start-up hook)."""
        self._task = asyncio.get_running_loop().create_task(self._keep_trying())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> dict[str, Any]:
        """Readiness: passes only with the key in hand."""
        if self._verifier is None:
            raise Unavailable("EVA's grant key has not been fetched yet")
        return {"source": "eva /v1/grant-key", "x_prefix": self._fingerprint}
