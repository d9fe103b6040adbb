"""``autopeft token create USER | list | revoke ID`` — the admin's side of tokens (on the database, through autopeft.api.admin).

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


def create_token(db_url: str, user: str, *args, **kwargs) -> str:
    """A new token for ``user`` (the operator's call: :func:`autopeft.api.admin.create_token`)."""
    from autopeft.api.admin import create_token as _create

    return _create(db_url, user, *args, **kwargs)


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
    from autopeft.api.admin import list_tokens

    rows = list_tokens(_settings(args).db_url, args.user)
    print(
        f"{'ID':>5}  {'PREFIX':<11} {'USER':<16} {'ROLE':<6} {'CREATED':<16}  {'EXPIRES':<16}  "
        f"{'LAST USED':<16}  STATE  NAME"
    )
    for t in rows:
        print(
            f"{t.id:>5}  {t.prefix:<11} {t.user[:16]:<16} {t.role:<6} {_when(t.created_at):<16}  "
            f"{_when(t.expires_at):<16}  {_when(t.last_used_at):<16}  {t.state:<6} {t.name or ''}"
        )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from autopeft.api.admin import revoke_token

    prefix = revoke_token(_settings(args).db_url, args.id)
    if prefix is None:
        print(f"error: no token {args.id}", file=sys.stderr)
        return 1
    print(f"revoked token {args.id} ({prefix}...)")
    return 0
