"""``autopeft token create USER | list | revoke ID`` — the admin's side of tokens (the database directly).

``create USER [--role admin|user] [--expires-in DAYS] [--name TEXT]`` prints a new token once
(stored as an HMAC keyed with ``AUTOPEFT_SECRET``: run it with the server's secret); ``--role``
sets the user's role. ``list [--user USER]`` shows every token (prefix, user, role, created, expiry,
last use, state); ``revoke ID`` revokes one (refused by the server within ``AUTOPEFT_TOKEN_CACHE_S``).
Users manage their own tokens over REST (``/api/v1/tokens``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "token", help="manage API tokens and roles (admin: works on the database)"
    )
    tsub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", help="database URL (default: $AUTOPEFT_DB_URL or ~/.autopeft/autopeft.db)"
    )
    p = tsub.add_parser(
        "create",
        parents=[common],
        help="create a token for USER (the user is created if new); printed once",
    )
    p.add_argument("user")
    p.add_argument(
        "--role", choices=["admin", "user"], help="set the user's role (new users: user)"
    )
    p.add_argument(
        "--expires-in", type=float, metavar="DAYS", help="expire after DAYS days (default: never)"
    )
    p.add_argument("--name", help="a label to tell the token apart")
    p.set_defaults(func=_cmd_create)
    p = tsub.add_parser("list", parents=[common], help="list tokens (never the tokens themselves)")
    p.add_argument("--user", help="only this user's tokens")
    p.set_defaults(func=_cmd_list)
    p = tsub.add_parser("revoke", parents=[common], help="revoke token ID (see list)")
    p.add_argument("id", type=int)
    p.set_defaults(func=_cmd_revoke)


def _settings(args: argparse.Namespace):
    from autopeft.api.settings import Settings

    return Settings(**({"db_url": args.db} if getattr(args, "db", None) else {}))


def _db(db_url: str):
    from autopeft.api.db import Database
    from autopeft.api.migrate import upgrade

    upgrade(db_url)
    return Database(db_url)


def create_token(
    db_url: str,
    user: str,
    secret: str | None = None,
    role: str | None = None,
    expires_at: dt.datetime | None = None,
    name: str | None = None,
) -> str:
    """A new token for ``user`` (created if new). ``secret``: the server's ``AUTOPEFT_SECRET``
    (default: this process's setting)."""
    from autopeft.api.security import create_token as _create
    from autopeft.api.settings import Settings

    secret = secret if secret is not None else Settings().secret
    db = _db(db_url)
    try:
        with db.write() as session:
            return _create(session, user, secret, role=role, name=name, expires_at=expires_at)
    finally:
        db.dispose()


def _cmd_create(args: argparse.Namespace) -> int:
    from autopeft.api.models import utcnow

    settings = _settings(args)
    expires = None
    if args.expires_in is not None:
        if not 0 < args.expires_in <= 3650:
            print("error: --expires-in must be in (0, 3650] days", file=sys.stderr)
            return 2
        expires = utcnow() + dt.timedelta(days=args.expires_in)
    try:
        print(
            create_token(settings.db_url, args.user, settings.secret, args.role, expires, args.name)
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _cmd_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from autopeft.api.models import ApiToken, User, utcnow
    from autopeft.api.security import is_expired

    db = _db(_settings(args).db_url)
    try:
        with db.read() as session:
            query = (
                select(ApiToken, User).join(User, ApiToken.user_id == User.id).order_by(ApiToken.id)
            )
            if args.user:
                query = query.where(User.name == args.user)
            rows = session.execute(query).all()
    finally:
        db.dispose()
    now = utcnow()
    print(
        f"{'ID':>5}  {'PREFIX':<11} {'USER':<16} {'ROLE':<6} {'CREATED':<16}  {'EXPIRES':<16}  "
        f"{'LAST USED':<16}  STATE  NAME"
    )
    for tok, user in rows:
        state = (
            "revoked" if tok.revoked else "expired" if is_expired(tok.expires_at, now) else "active"
        )
        print(
            f"{tok.id:>5}  {tok.prefix:<11} {user.name[:16]:<16} {user.role:<6} {_when(tok.created_at):<16}  "
            f"{_when(tok.expires_at):<16}  {_when(tok.last_used_at):<16}  {state:<6} {tok.name or ''}"
        )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from autopeft.api.models import ApiToken

    db = _db(_settings(args).db_url)
    try:
        with db.write() as session:
            row = session.get(ApiToken, args.id)
            if row is None:
                print(f"error: no token {args.id}", file=sys.stderr)
                return 1
            row.revoked = True
            prefix = row.prefix
    finally:
        db.dispose()
    print(f"revoked token {args.id} ({prefix}...)")
    return 0
