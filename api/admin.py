"""The operator's side of tokens, straight on the database (what ``autopeft token`` and the local
server's launcher call): create a token for a user (the user created if new, a role set), list
every token, revoke one. Users manage their own tokens over REST (``/api/v1/tokens``).

Each call opens the database (bringing its schema up to date first), does its work in one
transaction and disposes of the engine.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass


@contextmanager
def _database(db_url: str):
    from autopeft.api.db import Database
    from autopeft.api.migrate import upgrade

    upgrade(db_url)
    db = Database(db_url)
    try:
        yield db
    finally:
        db.dispose()


def create_token(
    db_url: str,
    user: str,
    secret: str | None = None,
    role: str | None = None,
    expires_at: dt.datetime | None = None,
    name: str | None = None,
) -> str:
    """A new token for ``user`` (created if new), printed once by its caller. ``secret``: the
    server's ``AUTOPEFT_SECRET`` (default: this process's setting). ValueError on a bad user name
    or role."""
    from autopeft.api.security import create_token as _create
    from autopeft.api.settings import Settings

    secret = secret if secret is not None else Settings().secret
    with _database(db_url) as db, db.write() as session:
        return _create(session, user, secret, role=role, name=name, expires_at=expires_at)


@dataclass(frozen=True)
class TokenRow:
    id: int
    prefix: str
    user: str
    role: str
    created_at: dt.datetime | None
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    state: str  # active | expired | revoked
    name: str | None


def list_tokens(db_url: str, user: str | None = None) -> list[TokenRow]:
    """Every token (never the token itself), oldest first; ``user``: only that user's."""
    from sqlalchemy import select

    from autopeft.api.models import ApiToken, User, utcnow
    from autopeft.api.security import is_expired

    with _database(db_url) as db, db.read() as session:
        query = select(ApiToken, User).join(User, ApiToken.user_id == User.id).order_by(ApiToken.id)
        if user:
            query = query.where(User.name == user)
        rows = session.execute(query).all()
        now = utcnow()
        return [
            TokenRow(
                tok.id,
                tok.prefix,
                u.name,
                u.role,
                tok.created_at,
                tok.expires_at,
                tok.last_used_at,
                "revoked"
                if tok.revoked
                else "expired"
                if is_expired(tok.expires_at, now)
                else "active",
                tok.name,
            )
            for tok, u in rows
        ]


def revoke_token(db_url: str, token_id: int) -> str | None:
    """Revoke token ``token_id``; its prefix, or None when there is no such token."""
    from autopeft.api.models import ApiToken

    with _database(db_url) as db, db.write() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            return None
        row.revoked = True
        return row.prefix
