"""The web console: its files, and signing in to it with an API key.

    GET  /                        the console's page (open: it holds no data; every
                                  request it makes is authenticated)
    GET  /console/{name}          its script, style sheet and icon (a fixed list)
    POST /v1/console/login {key}  -> {key_id, role, csrf_token, expires_at} and the
                                  session cookie (`web_sessions`); 401 for a wrong key
    GET  /v1/console/session      the caller's identity; with a console session also
                                  its csrf_token and expires_at (the page asks after a
                                  reload: its script cannot read the cookie)
    POST /v1/console/logout       ends the console session and clears the cookie

The files ship inside the package (`sonia/console/`), are plain HTML, CSS and
JavaScript with no build step and no third-party code, and are read once at
start-up. The page renders everything that comes from the API as text (DOM
`textContent`, never HTML), and the content security policy (`security_headers`)
would refuse anything else.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases.

from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import Response

from sonia.errors import NotFound
from sonia.home import ApiKey
from sonia.services.gateway.state import Gateway
from sonia.services.gateway.web_sessions import COOKIE

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
INDEX = "index.html"


def load_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the console by name, with its content type."""
    folder = files("sonia") / "console"
    found: dict[str, tuple[bytes, str]] = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in CONTENT_TYPES:
            found[item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    if INDEX not in found:
        raise RuntimeError("the console's index.html is missing from the package")
    return found


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[StrictStr, Field(min_length=1, max_length=200)]


def _file(content: bytes, media_type: str) -> Response:
    return Response(content, media_type=media_type, headers={"cache-control": "no-cache"})


def routers(gw: Gateway) -> list[APIRouter]:
    shipped = load_files()
    User = Annotated[ApiKey, Depends(gw.user)]
    pages = APIRouter(include_in_schema=False)
    api = APIRouter(prefix="/v1/console", tags=["console"])

    @pages.get("/")
    async def index() -> Response:
        return _file(*shipped[INDEX])

    @pages.get("/console/{name}")
    async def asset(name: str) -> Response:
        if name == INDEX or name not in shipped:
            raise NotFound(f"the console has no file {name[:80]!r}")
        return _file(*shipped[name])

    @api.post("/login")
    async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
        gw.credentials.check_origin(request)
        session = await gw.credentials.sign_in(body.key, response)
        response.headers["cache-control"] = "no-store"
        return {"key_id": session.key.id, "role": session.key.role,
                "csrf_token": session.csrf_token, "expires_at": session.expires_at}

    @api.get("/session")
    async def current(key: User, request: Request, response: Response) -> dict[str, Any]:
        response.headers["cache-control"] = "no-store"
        answer: dict[str, Any] = {"key_id": key.id, "role": key.role, "csrf_token": None,
                                  "expires_at": None}
        if "authorization" not in request.headers and COOKIE in request.cookies:
            session = await gw.credentials.session_of(request)
            answer.update(csrf_token=session.csrf_token, expires_at=session.expires_at)
        return answer

    @api.post("/logout")
    async def logout(key: User, request: Request, response: Response) -> dict[str, Any]:
        ended = await gw.credentials.sign_out(request, response)
        return {"key_id": key.id, "signed_out": ended}

    return [pages, api]
