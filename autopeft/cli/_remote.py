"""What the commands that talk to a controller share: the ``--url`` / ``--token`` options, the
client, error reporting and plain-text tables."""

from __future__ import annotations

import argparse
import sys


def remote_options() -> argparse.ArgumentParser:
    """The options that name the controller and the user's token, as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="controller URL (default $AUTOPEFT_URL or http://127.0.0.1:8642)"
    )
    common.add_argument("--token", help="API token (default $AUTOPEFT_TOKEN)")
    return common


def client(args: argparse.Namespace):
    from autopeft.client import Client

    return Client(args.url, args.token)


def run(func):
    """Wrap a command: an API error or an unreachable controller is one line on stderr, exit 1."""

    def wrapper(args: argparse.Namespace) -> int:
        import httpx

        from autopeft.client import ApiError

        try:
            return func(args)
        except ApiError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except httpx.HTTPError as err:
            try:
                where = str(err.request.url)
            except RuntimeError:  # no request attached
                where = args.url or "the default URL"
            print(
                f"error: cannot talk to the controller at {where}: {err} "
                "(is `autopeft serve` running? see --url / AUTOPEFT_URL)",
                file=sys.stderr,
            )
            return 1

    return wrapper


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def format_table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
