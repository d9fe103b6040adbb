"""``/docs``: the API's Swagger UI, served from this server (no CDN, no inline script).

The Swagger UI files come from the installed PyPI package ``fastapi-offline`` (its
``static/swagger-ui-bundle.js`` and ``swagger-ui.css``, Swagger UI 5, which reads OpenAPI 3.1);
``api/static/docs.js`` starts it on ``/openapi.json``. Everything is same-origin, so the page
works under the strict Content-Security-Policy of ``autopeft.api.middleware``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from autopeft.api.errors import envelope

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parents[1] / "static"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>autopeft API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/docs.js"></script></body></html>"""


def swagger_dir() -> Path | None:
    """``fastapi_offline/static`` of the installed package (found without importing it), or None."""
    spec = importlib.util.find_spec("fastapi_offline")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "static"
        if (path / "swagger-ui-bundle.js").is_file():
            return path
    return None


@router.get("/docs")
def docs():
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})


@router.get("/docs/assets/{name}")
def asset(name: str):
    if name == "docs.js":
        return FileResponse(HERE / "docs.js", media_type="text/javascript")
    folder = swagger_dir()
    if name not in ASSETS:
        return envelope(404, "not_found", f"no docs asset {name[:50]!r}")
    if folder is None:
        return envelope(
            404,
            "not_found",
            "Swagger UI is not installed: pip install fastapi-offline (its static "
            "files are served here)",
        )
    return FileResponse(
        folder / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"}
    )
