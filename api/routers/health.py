"""GET /healthz (no auth): the store answers; the server's version and database dialect, and
this replica's part in scheduling (leader / follower / off) and who the leader is.

GET /readyz (no auth, no database): whether this replica takes more requests now — 503 with
``Retry-After`` while every request slot is busy (``api.admission``), for a load balancer to
send traffic elsewhere — with the gates' counters."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from autopeft import __version__
from autopeft.api.admission import retry_headers
from autopeft.api.deps import StateDep
from autopeft.api.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(state: StateDep):
    with state.db.read() as session:
        session.execute(text("SELECT 1"))
    return {
        "status": "ok",
        "version": __version__,
        "database": state.db.engine.dialect.name,
        **state.replica.describe(),
    }


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(state: StateDep):
    gates = state.gates
    requests, uploads = gates["requests"], gates["uploads"]
    body = {
        "ready": not requests.saturated,
        "requests": requests.describe(),
        "uploads": uploads.describe(),
    }
    if requests.saturated:
        return JSONResponse(body, status_code=503, headers=retry_headers(requests.retry_after()))
    return body
