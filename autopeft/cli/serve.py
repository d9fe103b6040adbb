"""``autopeft serve [--db URL] [--host H] [--port P] [--executor local|ray] [--ray-address A]``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the controller (REST API, scheduler, dashboard page)")
    p.add_argument(
        "--db", help="database URL (default $AUTOPEFT_DB_URL or sqlite:///~/.autopeft/autopeft.db)"
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1; others need AUTOPEFT_SECRET)")
    p.add_argument("--port", type=int, help="port (default 8642)")
    p.add_argument("--executor", choices=["local", "ray"], help="where trials run (default local)")
    p.add_argument("--ray-address", help="Ray cluster address for --executor ray")
    p.add_argument("--artifacts", help="folder for checkpoints, adapters and worker logs")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from autopeft.api.server import serve
    from autopeft.api.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "db_url": args.db,
            "host": args.host,
            "port": args.port,
            "executor": args.executor,
            "ray_address": args.ray_address,
            "artifacts_dir": args.artifacts,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    try:
        serve(settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
