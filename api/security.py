"""API tokens: random, shown once, stored as sha256 hex only.

A token is ``apt_`` + 32 random bytes (url-safe base64): with that much entropy a plain
sha256 is the right hash (a slow password hash buys nothing and costs a lookup per request).
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft.api.models import ApiToken, User

TOKEN_PREFIX = "apt_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, user_name: str) -> str:
    """Create ``user_name`` if needed and a new token for it; returns the token (only time it exists)."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
        session.flush()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10]))
    return token


def user_for_token(session: Session, token: str) -> User | None:
    if not token or len(token) > 200:
        return None
    row = session.execute(select(User).join(ApiToken, ApiToken.user_id == User.id)
                          .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked.is_(False))).first()
    return row[0] if row else None
