"""GET /healthz (no auth) and the minimal page at / until the dashboard lands."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy import text

from autopeft import __version__
from autopeft.api.deps import StateDep
from autopeft.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(state: StateDep):
    with state.db.read() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__, "database": state.db.engine.dialect.name}


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>autopeft</title></head>
<body><h1>autopeft controller</h1>
<p>The dashboard is not installed in this build. The REST API is at <code>/api/v1</code>,
its documentation at <a href="/docs">/docs</a>.</p></body></html>"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index():
    return _PAGE
