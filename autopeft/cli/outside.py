"""``autopeft study enqueue ID`` and ``autopeft study attach ID``: configs to try next, and results
measured elsewhere (REST ``/studies/{id}/enqueue`` and ``/attach``).

``enqueue ID --config JSON [--config JSON ...] [--file FILE]``: FILE is YAML or JSON, a list of
configs or ``{"configs": [...]}``. ``attach ID --config JSON --values JSON [--test-values JSON]
[--label TEXT]``: one result, told to the optimiser; printed as the new trial.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autopeft.cli._remote import client as _client
from autopeft.cli._remote import run as _run
from autopeft.errors import InvalidConfig


def register(ssub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = ssub.add_parser(
        "enqueue",
        parents=[common],
        help="configs to try next, before the optimiser's own (a finished study runs again)",
    )
    p.add_argument("id", type=int)
    p.add_argument(
        "--config", action="append", default=[], metavar="JSON", help="one config; repeatable"
    )
    p.add_argument("--file", help="YAML / JSON: a list of configs, or {configs: [...]}")
    p.set_defaults(func=_cmd_enqueue)
    p = ssub.add_parser(
        "attach",
        parents=[common],
        help="a result measured elsewhere, told to the optimiser (never trained here)",
    )
    p.add_argument("id", type=int)
    p.add_argument("--config", required=True, metavar="JSON", help="the config measured")
    p.add_argument("--values", required=True, metavar="JSON", help="its metrics: every objective")
    p.add_argument("--test-values", metavar="JSON", help="your held-out test metrics, if any")
    p.add_argument("--label", help="where it comes from (at most 64 characters)")
    p.set_defaults(func=_cmd_attach)


def _mapping(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidConfig(f"{what} is not JSON: {err}", what) from None
    if not isinstance(value, dict):
        raise InvalidConfig(f"{what} must be a JSON object", what)
    return value


def configs_of(args: argparse.Namespace) -> list[dict]:
    configs = [_mapping(c, "--config") for c in args.config]
    if args.file:
        import yaml

        data = yaml.safe_load(Path(args.file).read_text())
        if isinstance(data, dict) and "configs" in data:
            data = data["configs"]
        if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
            raise InvalidConfig(f"{args.file}: a list of configs, or {{configs: [...]}}", "--file")
        configs += data
    if not configs:
        raise InvalidConfig("give --config JSON (repeatable) or --file FILE", "--config")
    return configs


@_run
def _cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        configs = configs_of(args)
    except InvalidConfig as err:
        print(f"error: {err.message}")
        return 2
    out = _client(args).study(args.id).enqueue(configs)
    study = out["study"]
    added = out["max_trials_added"]
    print(
        f"study {study['id']}: {len(out['configs'])} config(s) enqueued, {out['waiting']} waiting; "
        f"{study['state']}, max_trials {study['spec']['max_trials']}"
        + (f" (raised by {added} to fit them)" if added else "")
    )
    return 0


@_run
def _cmd_attach(args: argparse.Namespace) -> int:
    try:
        config = _mapping(args.config, "--config")
        values = _mapping(args.values, "--values")
        test = _mapping(args.test_values, "--test-values") if args.test_values else None
    except InvalidConfig as err:
        print(f"error: {err.message}")
        return 2
    trial = _client(args).study(args.id).attach(config, values, test, args.label)
    if trial.get("pending"):
        print(f"study {args.id}: {trial['message']}")
        return 0
    print(
        f"study {args.id}: trial {trial['id']} (number {trial['number']}) attached: "
        + ", ".join(f"{k} {v:g}" for k, v in (trial.get("values") or {}).items())
        + (
            ""
            if trial.get("feasible") is not False
            else f"; infeasible: {trial['infeasible_reason']}"
        )
    )
    return 0
