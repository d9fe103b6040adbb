"""FastAPI dependencies: ``CurrentUser`` (bearer token, with its role) and ``StateDep``.

There is no session dependency on purpose: a session a dependency opens stays open until the
response has been serialised, which FastAPI does in the handler thread pool, so under load a
request would hold its connection while it waits for a thread. Handlers open their sessions
with ``state.db.read()`` / ``write()`` and close them before they return."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from autopeft.api.errors import ApiError

if TYPE_CHECKING:
    from autopeft.api.db import Database
    from autopeft.api.scheduler import SchedulerManager
    from autopeft.api.services.listing import ListingCache
    from autopeft.api.settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: Database
    scheduler: SchedulerManager
    listing: ListingCache
    tokens: TokenCache = None  # type: ignore[assignment]
    datasets: Any = None  # services.datasets.DatasetStore
    replica: Any = None  # scheduling.leader.Replica: leader, follower or off
    gates: dict = None  # type: ignore[assignment]  # api.admission gates: requests, uploads

    def __post_init__(self):
        if self.tokens is None:
            self.tokens = TokenCache(self.settings.token_cache_s)


async def get_state(request: Request) -> AppState:
    return request.app.state.autopeft


StateDep = Annotated[AppState, Depends(get_state)]


@dataclass(frozen=True)
class UserRef:
    id: int
    name: str
    role: str = "user"
    token_id: int = 0
    token_expires_at: Any = None  # the presenting token's expiry (None: it never expires)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenCache:
    """token HMAC -> (user, expiry) for ``ttl`` seconds, so a poll does not cost a token query each
    time. Expiry is checked on every hit; :meth:`drop` forgets a revoked token at once. Lookups of
    one token that arrive together share one query (:meth:`lookup`)."""

    def __init__(self, ttl: float = 5.0, size: int = 1024):
        self.ttl, self.size, self._data, self._lock = ttl, size, {}, threading.Lock()
        self._inflight: dict[str, asyncio.Future] = {}

    async def lookup(self, key: str, query: Callable[[], Any]) -> Any:
        """``query()`` (in a worker thread) for ``key``, once for every caller waiting on it."""
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await run_in_threadpool(query)
        except BaseException as err:
            fut.set_exception(err)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            del self._inflight[key]

    def get(self, key: str) -> tuple[UserRef, Any] | None:
        with self._lock:
            hit = self._data.get(key)
            if hit and hit[2] > time.monotonic():
                return hit[0], hit[1]
            return None

    def put(self, key: str, user: UserRef, expires_at: Any) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._data) >= self.size:
                self._data.clear()
            self._data[key] = (user, expires_at, time.monotonic() + self.ttl)

    def drop(self, token_id: int | None = None, user_id: int | None = None) -> None:
        with self._lock:
            for key, (user, _, _) in list(self._data.items()):
                if user.token_id == token_id or user.id == user_id:
                    del self._data[key]


_bearer = HTTPBearer(
    auto_error=False,
    description="an API token (`autopeft token create USER`, or "
    "POST /api/v1/tokens with a token you have)",
)
LAST_USED_EVERY_S = 60.0


def _lookup(state: AppState, token: str, key: str) -> tuple[UserRef, Any] | None:
    from autopeft.api.models import ApiToken, utcnow
    from autopeft.api.security import find_token, rehash

    secret = state.settings.secret
    with state.db.read() as session:
        owner, legacy = find_token(session, token, secret)
    if owner is None:
        return None
    now = utcnow()
    stale = (
        owner.last_used_at is None or (now - owner.last_used_at).total_seconds() > LAST_USED_EVERY_S
    )
    if legacy or stale:
        with state.db.write() as session:
            if legacy:
                rehash(session, owner.token_id, token, secret)
            row = session.get(ApiToken, owner.token_id)
            if row is not None:
                row.last_used_at = now
    user = UserRef(owner.user_id, owner.user_name, owner.role, owner.token_id, owner.expires_at)
    return user, owner.expires_at


async def current_user(
    state: StateDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> UserRef:
    """The token's user. Async so that a cached token costs no thread hop; a miss queries in a thread."""
    from autopeft.api.security import MAX_TOKEN_CHARS, hash_token, is_expired

    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    if len(creds.credentials) > MAX_TOKEN_CHARS:
        raise ApiError(401, "unauthorized", "invalid, expired or revoked token")
    key = hash_token(creds.credentials, state.settings.secret)
    hit = state.tokens.get(key)
    if hit is None:
        token = creds.credentials
        hit = await state.tokens.lookup(key, lambda: _lookup(state, token, key))
        if hit is None:
            raise ApiError(401, "unauthorized", "invalid, expired or revoked token")
        state.tokens.put(key, *hit)
    user, expires_at = hit
    if is_expired(expires_at):
        raise ApiError(401, "unauthorized", "invalid, expired or revoked token")
    return user


CurrentUser = Annotated[UserRef, Depends(current_user)]
