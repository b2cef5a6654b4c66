"""Gateway routes: the home's gate runs and release bundles, for approvers.

    GET /v1/gates?limit=                 {runs: [{run_id, gate, profile, status, seconds,
                                         started_at, checks, checks_failed, waivers,
                                         source: {commit, dirty}, plots}]}, newest first
    GET /v1/gates/{run_id}               one run: the above, its parameters, waivers,
                                         every check, its files and plot titles
    GET /v1/gates/{run_id}/plots/{index} a plot of its soak report, as image/png
    GET /v1/releases                     {releases: [{name, tag, commit, created_at, gates,
                                         waivers, signoffs, verify: {ok, reason, state,
                                         ...}}]}

Everything is read from `artifacts/` (`evidence`); nothing is judged here.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases.

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.responses import Response

from sonia.errors import NotFound
from sonia.home import ApiKey
from sonia.services.gateway import evidence
from sonia.services.gateway.state import Gateway

RunId = Annotated[str, Path(max_length=100)]


def routers(gw: Gateway) -> list[APIRouter]:
    artifacts = gw.ctx.home.artifacts
    verifier = evidence.BundleVerifier()
    Approver = Annotated[ApiKey, Depends(gw.approver)]
    api = APIRouter(prefix="/v1", tags=["evidence"])

    def folder_of(run_id: str) -> Any:
        folder = evidence.run_dir(artifacts, run_id)
        if folder is None:
            raise NotFound(f"no gate run {run_id[:100]!r}")
        return folder

    @api.get("/gates")
    async def runs(key: Approver, limit: Annotated[int, Query(ge=1, le=500)] = 100
                   ) -> dict[str, Any]:
        return {"runs": await asyncio.to_thread(evidence.list_runs, artifacts, limit)}

    @api.get("/gates/{run_id}")
    async def run(key: Approver, run_id: RunId) -> dict[str, Any]:
        return await asyncio.to_thread(evidence.run_detail, folder_of(run_id))

    @api.get("/gates/{run_id}/plots/{index}")
    async def plot(key: Approver, run_id: RunId,
                   index: Annotated[int, Path(ge=0, le=1000)]) -> Response:
        png = await asyncio.to_thread(evidence.plot_png, folder_of(run_id), index)
        if png is None:
            raise NotFound(f"run {run_id} has no plot {index}")
        return Response(png, media_type="image/png", headers={"cache-control": "no-cache"})

    @api.get("/releases")
    async def releases(key: Approver) -> dict[str, Any]:
        bundles = await asyncio.to_thread(evidence.list_bundles, artifacts)
        found = []
        for bundle in reversed(bundles):
            summary = await asyncio.to_thread(evidence.bundle_summary, bundle)
            found.append({**summary, "verify": await verifier.verify(bundle)})
        return {"releases": found}

    return [api]
