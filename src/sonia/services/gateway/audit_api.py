"""Gateway route: EVA's audit log, for approvers.

    GET /v1/audit?before=&limit=   {records: [{seq, ts, kind, action_id, actor, detail,
                                   hash}], next_before, chain: {ok, records, first_bad_seq,
                                   reason, head_hash}}

Records come newest first; `before=<next_before>` pages back. `chain` is the
verification of the whole hash chain at the moment of reading (`actions.audit`),
the same check as `sonia audit verify`: a page of a log that was edited or cut
says so next to its records. The log names every key's actions, so a user key
is refused (403 FORBIDDEN).
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from sonia.home import ApiKey
from sonia.services.gateway.state import Gateway


def routers(gw: Gateway) -> list[APIRouter]:
    eva = gw.ctx.client("eva")
    Approver = Annotated[ApiKey, Depends(gw.approver)]
    api = APIRouter(prefix="/v1", tags=["audit"])

    @api.get("/audit")
    async def audit_log(key: Approver,
                        before: Annotated[int, Query(ge=1, le=2**62)] | None = None,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        page: dict[str, Any] = await eva.request("GET", "/v1/audit", params=params)
        return page

    return [api]
