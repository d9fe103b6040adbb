"""API tokens: random, shown once, stored as an HMAC keyed with the server secret.

A token is ``apt_`` + 32 random bytes (url-safe base64). The store keeps
``HMAC-SHA256(AUTOPEFT_SECRET, token)`` only: a copy of the database (a backup, a read through
some other hole) gives nobody a usable token, and somebody who can write to the database but does
not know the secret cannot plant a token of their own. Rotating the secret therefore revokes
every token. Tokens stored before this scheme (plain sha256, ``scheme="sha256"``) are still
accepted and rehashed with the secret on first use.

A token may expire (``expires_at``) and be revoked; both are refused at the next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft.api.models import ROLES, ApiToken, User, utcnow

TOKEN_PREFIX = "apt_"
MAX_TOKEN_CHARS = 200


def hash_token(token: str, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), token.encode("utf-8"), hashlib.sha256).hexdigest()


def legacy_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_user_name(name: str) -> str:
    if not name or len(name) > 128 or not name.isprintable() or name != name.strip():
        raise ValueError(
            f"user name must be 1-128 printable characters without surrounding spaces, got {name!r}"
        )
    return name


def ensure_user(session: Session, user_name: str, role: str | None = None) -> User:
    """The user ``user_name`` (created as a ``user`` if new); ``role`` sets its role when given."""
    check_user_name(user_name)
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name, role=role or "user")
        session.add(user)
        session.flush()
    elif role is not None:
        user.role = role
    return user


def issue_token(
    session: Session,
    user_id: int,
    secret: str,
    name: str | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[str, ApiToken]:
    """A new token for ``user_id``; returns it (the only time it exists) and its row."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user_id,
        token_hash=hash_token(token, secret),
        scheme="hmac",
        prefix=token[:10],
        name=name,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return token, row


def create_token(
    session: Session,
    user_name: str,
    secret: str,
    role: str | None = None,
    name: str | None = None,
    expires_at: dt.datetime | None = None,
) -> str:
    """Create ``user_name`` if needed and a new token for it; returns the token."""
    user = ensure_user(session, user_name, role)
    return issue_token(session, user.id, secret, name, expires_at)[0]


@dataclass(frozen=True)
class TokenOwner:
    user_id: int
    user_name: str
    role: str
    token_id: int
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


def is_expired(expires_at: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    return expires_at is not None and expires_at <= (now or utcnow())


def find_token(session: Session, token: str, secret: str) -> tuple[TokenOwner | None, bool]:
    """The owner of a valid (not revoked, not expired) token, or None; the flag says the row is a
    legacy sha256 one that should be rehashed (:func:`rehash`)."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None, False
    for digest, scheme in ((hash_token(token, secret), "hmac"), (legacy_hash(token), "sha256")):
        row = session.execute(
            select(ApiToken, User)
            .join(User, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == digest, ApiToken.scheme == scheme)
        ).first()
        if row is None:
            continue
        tok, user = row
        if tok.revoked or is_expired(tok.expires_at):
            return None, False
        return TokenOwner(
            user.id, user.name, user.role, tok.id, tok.expires_at, tok.last_used_at
        ), scheme == "sha256"
    return None, False


def rehash(session: Session, token_id: int, token: str, secret: str) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None and row.scheme == "sha256":
        row.token_hash, row.scheme = hash_token(token, secret), "hmac"


def user_for_token(session: Session, token: str, secret: str) -> User | None:
    owner, _ = find_token(session, token, secret)
    return session.get(User, owner.user_id) if owner else None
