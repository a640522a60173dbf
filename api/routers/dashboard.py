"""``GET /`` and ``GET /static/{path}``: the browser dashboard, from the installed package.

The dashboard is a folder of plain files (``rbot.dashboard``: HTML, ES modules,
CSS, SVG) with no build step.  Only a single file name directly inside that
folder, with a known extension, is ever served: anything with a slash, a
backslash, a leading dot or an unknown extension is a JSON 404, so a request
can never walk out of the folder or read the package's Python files.

Every response is ``Cache-Control: no-cache`` with an ``ETag``: the files carry
no content hash in their names, so the browser revalidates (a cheap 304) and an
upgrade is seen on the next load.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import error_response

router = APIRouter(tags=["dashboard"], include_in_schema=False)

PACKAGE: Final = "rbot.dashboard"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+$")


def _content_type(name: str) -> str | None:
    """The content type of a servable file name, or None when it is not servable."""
    if not _NAME_RE.match(name):
        return None
    return CONTENT_TYPES.get(name[name.rindex(".") :].lower())


def _serve(name: str, request: Request) -> Response:
    content_type = _content_type(name)
    if content_type is None:
        return _not_found()
    item = resources.files(PACKAGE).joinpath(name)
    if not item.is_file():
        return _not_found()
    body = item.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


def _not_found() -> Response:
    return error_response(404, "not_found", "no such dashboard file")


@router.get("/")
async def index(request: Request) -> Response:
    """The dashboard's single page."""
    return _serve("index.html", request)


@router.get("/static/{path:path}")
async def static(path: str, request: Request) -> Response:
    """One file of the dashboard folder (flat: no sub-folders)."""
    return _serve(path, request)
