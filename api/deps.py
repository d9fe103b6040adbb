"""FastAPI dependencies: ``SessionDep`` (read session), ``CurrentUser`` (bearer token), ``StateDep``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from autopeft.api.errors import ApiError
from autopeft.api.security import hash_token, user_for_token

if TYPE_CHECKING:
    from autopeft.api.db import Database
    from autopeft.api.scheduler import SchedulerManager
    from autopeft.api.services.listing import ListingCache
    from autopeft.api.settings import Settings


@dataclass
class AppState:
    settings: "Settings"
    db: "Database"
    scheduler: "SchedulerManager"
    listing: "ListingCache"


async def get_state(request: Request) -> AppState:
    return request.app.state.autopeft


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.db.read() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class UserRef:
    id: int
    name: str


class _TokenCache:
    """token hash -> user for a few seconds, so a poll does not cost a token query each time."""

    def __init__(self, ttl: float = 10.0, size: int = 1024):
        self.ttl, self.size, self._data, self._lock = ttl, size, {}, threading.Lock()

    def get(self, key: str) -> UserRef | None:
        with self._lock:
            hit = self._data.get(key)
            if hit and hit[1] > time.monotonic():
                return hit[0]
            return None

    def put(self, key: str, user: UserRef) -> None:
        with self._lock:
            if len(self._data) >= self.size:
                self._data.clear()
            self._data[key] = (user, time.monotonic() + self.ttl)


_bearer = HTTPBearer(auto_error=False, description="an API token from `autopeft token create USER`")
_cache = _TokenCache()


def _lookup(db: "Database", token: str) -> UserRef | None:
    with db.read() as session:
        row = user_for_token(session, token)
        return UserRef(row.id, row.name) if row is not None else None


async def current_user(state: StateDep,
                       creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> UserRef:
    """The token's user. Async so that a cached token costs no thread hop; a miss queries in a thread."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    key = hash_token(creds.credentials)
    user = _cache.get(key)
    if user is None:
        user = await run_in_threadpool(_lookup, state.db, creds.credentials)
        if user is None:
            raise ApiError(401, "unauthorized", "invalid or revoked token")
        _cache.put(key, user)
    return user


CurrentUser = Annotated[UserRef, Depends(current_user)]
