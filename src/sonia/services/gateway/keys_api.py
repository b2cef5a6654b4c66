"""Gateway routes: the home's API keys, for approvers (the home's administrators).

    GET  /v1/keys                  {keys: [{id, role, created_at, revoked_at, state}]}
                                   (never a key nor its hash)
    POST /v1/keys/{key_id}/revoke  -> the key, revoked: it stops working at once, and so
                                   do the console sessions made with it; 404 for an
                                   unknown id; revoking twice changes nothing

Keys are made with `sonia keys create` on the machine (the command prints the
secret once, to the person at the terminal); here they can be listed and
revoked, like `sonia keys list|revoke`. The gateway writes the key file under
the same lock as the command (`Home.revoke_api_key`).
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases.

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from sonia.errors import Forbidden, NotFound
from sonia.home import ApiKey
from sonia.services.gateway.state import Gateway

KEY_ID = re.compile(r"^[0-9a-f]{12}$")


def routers(gw: Gateway) -> list[APIRouter]:
    home = gw.ctx.home
    Approver = Annotated[ApiKey, Depends(gw.approver)]
    api = APIRouter(prefix="/v1", tags=["keys"])

    @api.get("/keys")
    async def listing(key: Approver) -> dict[str, Any]:
        found = await asyncio.to_thread(home.api_keys)
        return {"keys": [k.to_dict() for k in found]}

    @api.post("/keys/{key_id}/revoke")
    async def revoke(key: Approver, key_id: Annotated[str, Path(max_length=64)]
                     ) -> dict[str, Any]:
        if home.replica_source() is not None:
            raise Forbidden(f"keys are revoked at the source home of this replica "
                            f"({home.replica_source()}), then copied here")
        revoked = await asyncio.to_thread(home.revoke_api_key, key_id) \
            if KEY_ID.match(key_id) else None
        if revoked is None:
            raise NotFound(f"no key {key_id[:64]!r}")
        await gw.credentials.forget_key(key_id)
        return revoked.to_dict()

    return [api]
