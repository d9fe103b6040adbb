"""Build the real-run PEFT table: every candidate of a task (``tasks.py``) trained with several
seeds, validation and test correctness recorded at every report (``record.py``).

    .venv/bin/python benchmarks/peft_table/build.py --task tweets            # all of it (~3-4 h, 2 cores)
    .venv/bin/python benchmarks/peft_table/build.py --task bbc_news
    .venv/bin/python benchmarks/peft_table/build.py --task tweets --minutes 60   # an hour's worth, then stop
    .venv/bin/python benchmarks/peft_table/build.py --task tweets --kind zero --seeds 0 1  # some
    .venv/bin/python benchmarks/peft_table/build.py --status

Resumable: every finished run is appended at once to ``data/<task>.runs.jsonl`` (committed, one
JSON line a run) and a rerun trains only the (candidate, seed) pairs not there. Runs go
seed-major (every candidate with seed 0, then 1, ...), so a partial table is usable. ``--workers``
runs (one torch thread each) train side by side in child processes; the parent alone writes.
``data/<task>.meta.json`` holds the task's workload, its candidates and the split rows and labels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tasks import DATA, SEEDS, TASKS, candidates  # noqa: E402


def runs_path(task: str, data: Path = DATA) -> Path:
    return data / f"{task}.runs.jsonl"


def meta_path(task: str, data: Path = DATA) -> Path:
    return data / f"{task}.meta.json"


def done_runs(task: str, data: Path = DATA) -> set[tuple[str, int]]:
    path = runs_path(task, data)
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out.add((row["candidate"], int(row["seed"])))
    return out


def _work(cand: dict, seed: int) -> dict:
    from record import record_run

    run = record_run(cand["workload"], cand["config"], seed, threads=1, budget=cand.get("budget"))
    return {"candidate": cand["id"], **run}


def _write_meta(task: str, workload: dict, cands: list[dict], run: dict, data: Path) -> None:
    """The task's workload, candidates, and split rows and labels (from its first run)."""
    import numpy as np

    from autopeft.trials.context import TrialContext
    from autopeft.trials.train import PeftTrainer

    trainer = PeftTrainer(workload, {}, TrialContext(trial_id="meta"))
    tokens = trainer.prepare_data()
    labels = np.asarray(tokens.labels)
    meta = {
        "task": task,
        "workload": workload,
        "label_names": list(tokens.label_names),
        "val_index": run["val_index"],
        "test_index": run["test_index"],
        "val_labels": labels[run["val_index"]].tolist(),
        "test_labels": labels[run["test_index"]].tolist(),
        "candidates": [{k: c[k] for k in ("id", "kind", "config")} for c in cands],
        "versions": _versions(),
    }
    meta_path(task, data).write_text(json.dumps(meta, indent=1) + "\n")


def _add_candidates(task: str, cands: list[dict], data: Path) -> None:
    """A table built before with fewer candidates lists the new ones too (in build order)."""
    path = meta_path(task, data)
    if not path.exists():
        return
    meta = json.loads(path.read_text())
    known = {c["id"] for c in meta["candidates"]}
    new = [{k: c[k] for k in ("id", "kind", "config")} for c in cands if c["id"] not in known]
    if new:
        meta["candidates"] += new
        path.write_text(json.dumps(meta, indent=1) + "\n")


def _versions() -> dict[str, str]:
    import platform

    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def build(
    task: str,
    n_sobol: int,
    seeds: list[int],
    workers: int,
    minutes: float | None,
    kinds: list[str] | None = None,
) -> None:
    cands = candidates(task, n_sobol)
    todo = [c for c in cands if not kinds or c["kind"] in kinds]
    _add_candidates(task, cands, DATA)  # the meta lists every candidate in build order
    record(task, TASKS[task], todo, seeds, workers, minutes)


def record(
    task: str,
    workload: dict,
    cands: list[dict],
    seeds: list[int],
    workers: int = 1,
    minutes: float | None = None,
    data: Path = DATA,
) -> None:
    """Train every ``(candidate, seed)`` not yet in ``data/<task>.runs.jsonl`` (seed-major) and
    append each run as it ends; ``cands``: ``[{"id", "kind", "config", "workload"}]``."""
    data.mkdir(parents=True, exist_ok=True)
    _add_candidates(task, cands, data)
    done = done_runs(task, data)
    todo = [(c, s) for s in seeds for c in cands if (c["id"], s) not in done]
    print(f"{task}: {len(done)} runs recorded, {len(todo)} to go", flush=True)
    deadline = time.time() + minutes * 60 if minutes else None
    pending = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < workers and (deadline is None or time.time() < deadline):
                cand, seed = queue.pop(0)
                pending[pool.submit(_work, cand, seed)] = (cand["id"], seed)
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                cid, seed = pending.pop(fut)
                try:
                    row = fut.result()
                except Exception as err:  # a failed run is reported, never recorded
                    print(f"  {cid} seed {seed}: FAILED {err!r}", flush=True)
                    continue
                if not meta_path(task, data).exists():
                    _write_meta(task, workload, cands, row, data)
                row.pop("val_index"), row.pop("test_index")
                with runs_path(task, data).open("a") as fh:
                    fh.write(json.dumps(row, separators=(",", ":")) + "\n")
                last = row["reports"][-1]
                print(
                    f"  {cid} seed {seed}: val {last['accuracy']:.3f} test "
                    f"{last['test_accuracy']:.3f} params {row['trainable_params']:,} "
                    f"({row['wall_s']:.0f} s)",
                    flush=True,
                )


def status() -> None:
    for task in TASKS:
        done = done_runs(task)
        size = runs_path(task).stat().st_size if runs_path(task).exists() else 0
        print(f"{task}: {len(done)} runs, {size / 1024:.0f} KiB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=list(TASKS), action="append")
    ap.add_argument("--n-sobol", type=int, help="Sobol candidates (default: tasks.N_SOBOL)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--minutes", type=float, help="start no run after this many minutes")
    ap.add_argument(
        "--kind", action="append", choices=["baseline", "sobol", "zero"], help="only these"
    )
    ap.add_argument("--status", action="store_true")
    args = ap.parse_args(argv)
    if args.status or not args.task:
        status()
        return 0
    for task in args.task:
        build(task, args.n_sobol, args.seeds, args.workers, args.minutes, args.kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
