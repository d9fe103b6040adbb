"""``autopeft token create USER [--db URL]``: prints a new API token once (stored hashed)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("token", help="manage API tokens")
    tsub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = tsub.add_parser("create", help="create a token for USER (the user is created if new); printed once")
    p.add_argument("user")
    p.add_argument("--db", help="database URL (default: $AUTOPEFT_DB_URL or ~/.autopeft/autopeft.db)")
    p.set_defaults(func=_cmd_create)


def create_token(db_url: str, user: str) -> str:
    from autopeft.api.db import Database
    from autopeft.api.migrate import upgrade
    from autopeft.api.security import create_token as _create

    upgrade(db_url)
    db = Database(db_url)
    try:
        with db.write() as session:
            return _create(session, user)
    finally:
        db.dispose()


def _cmd_create(args: argparse.Namespace) -> int:
    from autopeft.api.settings import Settings

    settings = Settings(**({"db_url": args.db} if args.db else {}))
    print(create_token(settings.db_url, args.user))
    return 0
