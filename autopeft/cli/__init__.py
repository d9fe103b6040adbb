"""The ``autopeft`` command line.

Each sub-command group lives in its own module of this package exposing
``register(subparsers)``; the module's handlers import heavy libraries lazily.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from autopeft.errors import InvalidConfig

# Sub-command modules, in help order. A module adds its parsers and sets ``func``.
_COMMAND_MODULES = [
    "autopeft.cli.space",
    "autopeft.cli.trial",
    "autopeft.cli.serve",
    "autopeft.cli.token",
    "autopeft.cli.study",
    "autopeft.cli.dataset",
    "autopeft.cli.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopeft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InvalidConfig as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
