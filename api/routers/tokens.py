"""/api/v1/tokens: one's own API tokens — create (with an expiry), list, revoke. /api/v1/me: who am I."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Response
from sqlalchemy import select

from autopeft.api.deps import CurrentUser, StateDep
from autopeft.api.errors import ApiError, not_found
from autopeft.api.models import ApiToken, Study, Trial, utcnow
from autopeft.api.routers._common import ERRORS
from autopeft.api.schemas import (
    MePublic,
    TokenCreate,
    TokenCreated,
    TokenId,
    TokenList,
)
from autopeft.api.security import is_expired, issue_token

router = APIRouter(
    tags=["tokens"],
    responses=ERRORS,
)


def _naive_utc(when: dt.datetime) -> dt.datetime:
    """``when`` as the store keeps times: naive UTC."""
    return when if when.tzinfo is None else when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _public(tok: ApiToken, current_id: int, now: dt.datetime) -> dict:
    return {
        "id": tok.id,
        "prefix": tok.prefix,
        "name": tok.name,
        "created_at": tok.created_at,
        "expires_at": tok.expires_at,
        "last_used_at": tok.last_used_at,
        "revoked": tok.revoked,
        "expired": is_expired(tok.expires_at, now),
        "current": tok.id == current_id,
    }


@router.get("/tokens", response_model=TokenList, operation_id="list_tokens")
def list_tokens(user: CurrentUser, state: StateDep):
    """Your tokens (never the tokens themselves): prefix, name, created, expiry, last use, state."""
    now = utcnow()
    with state.db.read() as session:
        rows = session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
        ).all()
    return {"tokens": [_public(t, user.token_id, now) for t in rows]}


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenCreated,
    operation_id="create_token",
    responses={
        201: {
            "description": "the new token, shown once",
            "links": {
                "RevokeToken": {
                    "operationId": "revoke_token",
                    "parameters": {"token_id": "$response.body#/id"},
                }
            },
        }
    },
)
def create_token(body: TokenCreate, user: CurrentUser, state: StateDep):
    """A new token for yourself, expiring after ``expires_in_days``. The token is in this answer only."""
    limit = state.settings.token_max_days
    if body.expires_in_days > limit:
        raise ApiError(
            422,
            "invalid_request",
            f"expires_in_days must be at most {limit} on this server (AUTOPEFT_TOKEN_MAX_DAYS)",
            "expires_in_days",
        )
    now = utcnow()
    expires = now + dt.timedelta(days=body.expires_in_days)
    held = user.token_expires_at
    if held is not None and expires > _naive_utc(held):
        left = max(0.0, (_naive_utc(held) - now).total_seconds()) / 86400
        raise ApiError(
            422,
            "invalid_request",
            f"a token cannot make one that outlives it: this token expires in {left:.2f} days, "
            f"so expires_in_days must be at most that (ask an admin for a longer-lived token)",
            "expires_in_days",
        )
    with state.db.write() as session:
        token, row = issue_token(session, user.id, state.settings.secret, body.name, expires)
        return {**_public(row, user.token_id, now), "token": token}


@router.delete(
    "/tokens/{token_id}", status_code=204, response_class=Response, operation_id="revoke_token"
)
def revoke_token(token_id: TokenId, user: CurrentUser, state: StateDep):
    """Revoke one of your tokens (this one too, if you wish); it is refused from the next request on."""
    with state.db.write() as session:
        row = session.get(ApiToken, token_id)
        if row is None or row.user_id != user.id:
            raise not_found("token", token_id)
        row.revoked = True
    state.tokens.drop(token_id=token_id)
    return Response(status_code=204)


@router.get("/me", response_model=MePublic, operation_id="get_me")
def me(user: CurrentUser, state: StateDep):
    """Your name and role, whether you may run python workloads, the operator's limits and your usage."""
    with state.db.read() as session:
        return _me(user, session, state)


def _me(user, session, state) -> dict:
    s = state.settings
    from sqlalchemy import func

    running = session.scalar(
        select(func.count())
        .select_from(Study)
        .where(Study.user_id == user.id, Study.state == "running")
    )
    stored = state.datasets.stored_bytes(session, user.id)
    python = s.python_workloads == "all" or (s.python_workloads == "admins" and user.is_admin)
    if state.replica is None or state.replica.leader:  # the slots this process's scheduler holds
        trials = state.scheduler.slots.running(user.id)
    else:  # a follower (or a read-only API) schedules nothing: the store knows
        trials = session.scalar(
            select(func.count())
            .select_from(Trial)
            .join(Study, Trial.study_id == Study.id)
            .where(Study.user_id == user.id, Trial.state == "running")
        )
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "python_workloads": python,
        "limits": {
            "max_upload_bytes": s.max_upload_bytes,
            "max_stored_bytes": s.max_stored_bytes_per_user or None,
            "max_running_trials": s.max_running_trials_per_user or None,
            "max_active_studies": s.max_active_studies_per_user or None,
        },
        "usage": {
            "stored_bytes": int(stored or 0),
            "active_studies": int(running or 0),
            "running_trials": int(trials or 0),
        },
    }
