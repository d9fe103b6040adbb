"""GET /healthz (no auth): the store answers; the server's version and database dialect, and
this replica's part in scheduling (leader / follower / off) and who the leader is."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from autopeft import __version__
from autopeft.api.deps import StateDep
from autopeft.api.schemas import Health

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
