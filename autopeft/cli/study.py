"""``autopeft study create FILE | list | show ID | stop ID | resume ID | wait ID | export ID TRIAL DIR``.

Talks to a running controller: ``--url`` (or ``$AUTOPEFT_URL``, default http://127.0.0.1:8642)
and ``--token`` (or ``$AUTOPEFT_TOKEN``). FILE is a study spec in YAML or JSON (the REST body).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("study", help="submit and follow studies on a controller")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="controller URL (default $AUTOPEFT_URL or http://127.0.0.1:8642)")
    common.add_argument("--token", help="API token (default $AUTOPEFT_TOKEN)")
    ssub = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    p = ssub.add_parser("create", parents=[common], help="submit a study spec (YAML or JSON file)")
    p.add_argument("file")
    p.add_argument("--wait", action="store_true", help="wait for it to end, with a progress bar")
    p.set_defaults(func=_cmd_create)
    ssub.add_parser("list", parents=[common], help="your studies").set_defaults(func=_cmd_list)
    for name, helptext, func in (("show", "one study with its Pareto front", _cmd_show),
                                 ("stop", "stop a study (running trials go back to the queue)", _cmd_stop),
                                 ("resume", "resume a stopped study", _cmd_resume),
                                 ("wait", "wait for a study to end, with a progress bar", _cmd_wait)):
        p = ssub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("id", type=int)
        p.add_argument("--json", action="store_true", help="print JSON") if name == "show" else None
        p.set_defaults(func=func)
    p = ssub.add_parser("export", parents=[common], help="download a trial's adapter into DIR")
    p.add_argument("id", type=int)
    p.add_argument("trial", type=int, help="trial id")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_export)


def _client(args: argparse.Namespace):
    from autopeft.client import Client

    return Client(args.url, args.token)


def _run(func):
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
            print(f"error: cannot talk to the controller at {where}: {err} "
                  "(is `autopeft serve` running? see --url / AUTOPEFT_URL)", file=sys.stderr)
            return 1
    return wrapper


def load_spec(path: str) -> dict:
    import yaml

    from autopeft.errors import InvalidConfig

    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise InvalidConfig(f"{path}: a study spec must be a mapping", path)
    return data


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


def pareto_table(study) -> str:
    names = [o["name"] for o in study.spec["objectives"]]
    rows = [[t["id"], t["number"], *[(t.get("values") or {}).get(n) for n in names]] for t in study.pareto()]
    rows.sort(key=lambda r: r[2] if isinstance(r[2], float) else 0.0)
    return format_table(rows, ["trial", "number", *names])


@_run
def _cmd_create(args: argparse.Namespace) -> int:
    study = _client(args).create_study(spec=load_spec(args.file))
    print(f"study {study.id} ({study.name}) created, state {study.state}")
    if args.wait:
        study.wait()
        print(pareto_table(study))
    return 0


@_run
def _cmd_list(args: argparse.Namespace) -> int:
    rows = [[s.id, s.name, s.state, s.counts.get("complete", 0), s.counts.get("running", 0),
             s.counts.get("failed", 0), s.spec.get("max_trials")] for s in _client(args).studies()]
    print(format_table(rows, ["id", "name", "state", "complete", "running", "failed", "max_trials"]))
    return 0


@_run
def _cmd_show(args: argparse.Namespace) -> int:
    client = _client(args)
    study = client.study(args.id)
    if args.json:
        print(json.dumps({"study": study.data, "pareto": study.pareto(), "hypervolume": study.hypervolume()},
                         indent=1, default=str))
        return 0
    print(f"study {study.id}: {study.name}  state {study.state}  trials {study.counts}")
    print(f"hypervolume {study.hypervolume():.6g}")
    print(pareto_table(study))
    return 0


@_run
def _cmd_stop(args: argparse.Namespace) -> int:
    study = _client(args).study(args.id).stop()
    print(f"study {study.id}: {study.state}")
    return 0


@_run
def _cmd_resume(args: argparse.Namespace) -> int:
    study = _client(args).study(args.id).resume()
    print(f"study {study.id}: {study.state}")
    return 0


@_run
def _cmd_wait(args: argparse.Namespace) -> int:
    study = _client(args).study(args.id).wait()
    print(f"study {study.id}: {study.state} {study.counts}")
    return 0 if study.state == "finished" else 1


@_run
def _cmd_export(args: argparse.Namespace) -> int:
    path = _client(args).study(args.id).export(args.trial, args.dir)
    print(f"trial {args.trial} exported to {path}")
    return 0
