"""A bounded soak (issue 31): real peft studies run while Locust polls the controller, and the
controller and trial workers are killed with SIGKILL at random times.

The real controller (one uvicorn process, SQLite by default or ``--db postgresql``, local
executor) runs studies of the real peft workload at tiny sizes (a 2-layer random BERT with
MiniLM's tokenizer, 180 labelled rows, LoRA per layer; a trial takes seconds), ``--studies`` at a
time, a new one started whenever one finishes, for ``--minutes``. Meanwhile Locust
(``load_locust.py``, ``SoakUser``) polls the studies, their trials and fronts with ``--users``
users, and a chaos loop kills at random moments (every ``--every`` seconds on average): the
controller (SIGKILL; restarted after a few seconds, as a supervisor would) or one trial worker
process (SIGKILL).

Every completed trial the pollers' side sees is remembered with its values; at the end (after the
last studies finish) each must still be complete with the same values. Reported: completed trials
lost (goal 0), answers 5xx (goal 0; connection errors while the controller is down are counted
apart), studies that did not finish (goal 0), trials failed by a kill, and the kills.

    .venv/bin/python benchmarks/soak.py                    # ~35 min on 2 cores
    .venv/bin/python benchmarks/soak.py --minutes 3 --every 40   # smoke

Writes ``benchmarks/results/soak.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from api_throughput import free_port, start_controller, stop  # noqa: E402

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


def tiny_assets(work: Path) -> tuple[Path, Path]:
    """A 2-layer, 32-wide random BERT saved with MiniLM's tokenizer, and 180 labelled rows."""
    import torch
    from transformers import BertConfig, BertModel

    from tests.conftest import TOKENIZER_FILES, make_rows, minilm_dir

    torch.manual_seed(0)
    model = work / "tiny_bert"
    BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    ).save_pretrained(model)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, model / name)
    data = work / "rows.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(make_rows(180))
    return model, data


def study_spec(model: Path, data: Path, n: int) -> dict:
    return {
        "name": f"soak-{n}",
        "space": "lora_per_layer",
        "objectives": OBJECTIVES,
        "optimizer": {"name": "random" if n % 2 else "sobol"},
        "baselines": [],
        "workload": {
            "kind": "peft",
            "model": str(model),
            "dataset": str(data),
            "validation_fraction": 0.2,
            "batch_size": 32,
            "max_length": 32,
            "epochs": 2,
            "evals_per_epoch": 2,
            "pooling": "mean",
        },
        "max_trials": 8,
        "max_parallel": 2,
        "seed": n,
    }


class Controller:
    """The controller process, killed and restarted by the chaos loop."""

    def __init__(self, work: Path, db_url: str):
        self.work, self.db_url, self.port = work, db_url, free_port()
        self.proc = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_controller(self.work, self.port, run_scheduler=True, db_url=self.db_url)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def workers(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def _get(url: str, token: str, path: str):
    import httpx

    try:
        r = httpx.get(
            url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
        )
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def soak(args, work: Path) -> dict:
    import httpx

    from autopeft.api.admin import create_token

    pg = None
    if args.db == "postgresql":
        from tests.api.conftest import Postgres

        pg = Postgres().start()
        db_url = pg.new_database()
    else:
        db_url = f"sqlite:///{work / 'soak.db'}"
    model, data = tiny_assets(work)
    ctl = Controller(work, db_url)
    ctl.start()
    token = create_token(db_url, "soaker")
    context = work / "context.json"
    rng = random.Random(args.seed)
    studies: list[int] = []
    completed: dict[int, dict] = {}  # trial id -> values, as first seen complete
    kills = {"controller": 0, "worker": 0}
    made = 0

    def create() -> None:
        nonlocal made
        while True:
            try:
                r = httpx.post(
                    ctl.url + "/api/v1/studies",
                    json=study_spec(model, data, made),
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                    trust_env=False,
                )
            except httpx.HTTPError:
                time.sleep(1)  # the controller is down: a supervisor restarts it
                continue
            if r.status_code == 201:
                studies.append(r.json()["id"])
                made += 1
                return
            if r.status_code == 503:
                time.sleep(float(r.headers.get("retry-after", 1)))
                continue
            raise RuntimeError(f"create: {r.status_code} {r.text[:300]}")

    def write_context() -> None:
        tmp = context.with_suffix(".tmp")
        tmp.write_text(json.dumps({"users": [{"token": token, "studies": list(studies)}]}))
        os.replace(tmp, context)

    def observe() -> dict[int, str]:
        """Each study's state; remembers every trial seen complete."""
        states = {}
        for sid in studies:
            study = _get(ctl.url, token, f"/api/v1/studies/{sid}")
            page = _get(ctl.url, token, f"/api/v1/studies/{sid}/trials?limit=500")
            if study is None or page is None:
                continue
            states[sid] = study["state"]
            for t in page["trials"]:
                if t["state"] == "complete":
                    completed.setdefault(t["id"], t["values"])
        return states

    for _ in range(args.studies):
        create()
    write_context()
    locust = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            str(HERE / "load_locust.py"),
            "SoakUser",
            "--headless",
            "-u",
            str(args.users),
            "-r",
            str(args.users),
            "--host",
            ctl.url,
            "--only-summary",
            "--loglevel",
            "ERROR",
            "--exit-code-on-error",
            "0",
        ],
        env=dict(
            os.environ,
            AUTOPEFT_LOAD_CONTEXT=str(context),
            AUTOPEFT_LOAD_OUT=str(work / "soak-tally.json"),
            PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
        ),
        cwd=work,
        stdout=subprocess.DEVNULL,
    )
    t0 = time.time()
    deadline = t0 + args.minutes * 60
    next_kill = t0 + rng.expovariate(1 / args.every)
    down = []  # (start, end) of controller outages
    try:
        while time.time() < deadline:
            states = observe()
            running = [s for s in studies if states.get(s) == "running"]
            for _ in range(args.studies - len(running)):
                create()
            write_context()
            if time.time() >= next_kill:
                if rng.random() < 0.5:
                    ctl.kill9()
                    kills["controller"] += 1
                    start = time.time()
                    time.sleep(rng.uniform(1, 5))
                    ctl.start()
                    down.append((start, time.time()))
                else:
                    pids = ctl.workers()
                    if pids:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        kills["worker"] += 1
                next_kill = time.time() + rng.expovariate(1 / args.every)
            time.sleep(2)
        # no more studies: wait for the last ones to finish (bounded)
        end = time.time() + args.drain_minutes * 60
        states = observe()
        while time.time() < end and any(states.get(s) == "running" for s in studies):
            time.sleep(3)
            states = observe()
    finally:
        locust.send_signal(signal.SIGTERM)
        try:
            locust.wait(timeout=60)
        except subprocess.TimeoutExpired:
            locust.kill()
    # every trial once seen complete is still complete, with the same values
    now: dict[int, dict] = {}
    unfinished, failed_by_kill = [], 0
    for sid in studies:
        study = _get(ctl.url, token, f"/api/v1/studies/{sid}")
        page = _get(ctl.url, token, f"/api/v1/studies/{sid}/trials?limit=500")
        if study is None or page is None or study["state"] != "finished":
            unfinished.append(sid)
        for t in (page or {"trials": []})["trials"]:
            now[t["id"]] = t
            error = (t.get("error") or "").lower()
            failed_by_kill += t["state"] == "failed" and ("signal" in error or "killed" in error)
    lost = [tid for tid in completed if now.get(tid, {}).get("state") != "complete"]
    changed = [tid for tid, v in completed.items() if tid not in lost and now[tid]["values"] != v]
    stop(ctl.proc)
    if pg is not None:
        pg.stop()
    tally = json.loads((work / "soak-tally.json").read_text())
    by_status: dict[str, int] = {}
    for counts in tally["status"].values():
        for code, n in counts.items():
            by_status[code] = by_status.get(code, 0) + n
    return {
        "db": args.db,
        "minutes": args.minutes,
        "studies_run": len(studies),
        "trials_completed_seen": len(completed),
        "trials_lost": sorted(set(lost)),
        "trials_changed": changed,
        "trials_failed_by_kill": failed_by_kill,
        "studies_not_finished": unfinished,
        "kills": kills,
        "controller_down_s": round(sum(e - s for s, e in down), 1),
        "answers": by_status,
        "answers_5xx": sum(n for c, n in by_status.items() if c.startswith("5") and c != "503"),
        "answers_503": by_status.get("503", 0),
        "connection_errors": tally["errors"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--drain-minutes", type=float, default=10.0)
    ap.add_argument("--studies", type=int, default=3, help="studies running at a time")
    ap.add_argument("--users", type=int, default=50, help="Locust users polling")
    ap.add_argument("--every", type=float, default=90.0, help="mean seconds between kills")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "soak.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="autopeft-soak-") as tmp:
        result = soak(args, Path(tmp))
    goals = [
        f"GOAL completed trials lost: {'met' if not result['trials_lost'] and not result['trials_changed'] else 'not met'} "
        f"({len(result['trials_lost'])} lost, {len(result['trials_changed'])} changed, of "
        f"{result['trials_completed_seen']} seen complete)",
        f"GOAL no 5xx but 503: {'met' if result['answers_5xx'] == 0 else 'not met'} "
        f"({result['answers_5xx']} 5xx, {result['answers_503']} 503, connection errors while the "
        f"controller was down: {sum(result['connection_errors'].values())})",
        f"GOAL every study finishes: {'met' if not result['studies_not_finished'] else 'not met'} "
        f"({len(result['studies_not_finished'])} of {result['studies_run']} not finished)",
    ]
    result["goals"] = goals
    print(json.dumps({k: v for k, v in result.items() if k != "goals"}, indent=1))
    for line in goals:
        print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
