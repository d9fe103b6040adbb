"""The plan's time per epoch against the measured one, for the demo's workload (issue 33 item 8).

``POST /studies?dry_run=true`` (``autopeft study plan``) predicts the seconds an epoch of a trial
takes from this user's earlier complete trials of the same model, data and sizes. This runs, on the
local controller (SQLite, local executor, the demo's 2 trials at a time), a first study of the
demo's spec (``autopeft demo``: MiniLM, tweets, ``lora_per_layer``) that the plan learns from, asks
the plan of the same spec, then runs a second study of that spec (another seed: other configs) and
measures its trials' seconds per epoch ((train + evaluation time) / epochs trained, the plan's own
measure). The goal: the prediction within 25% of the second study's median.

    .venv/bin/python benchmarks/plan_time.py                 # ~10 min on 2 cores
    .venv/bin/python benchmarks/plan_time.py --trials 3      # quicker

Prints a table and writes ``benchmarks/results/plan_time.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _busy_per_epoch(trials: list[dict]) -> list[float]:
    out = []
    for t in trials:
        v = t.get("values") or {}
        if t["state"] != "complete" or t.get("kind") != "search":
            continue
        epochs = float(v.get("epochs_trained") or t.get("epochs_trained") or 0.0)
        busy = float(v.get("train_time_s") or 0.0) + float(v.get("eval_time_s") or 0.0)
        if epochs > 0 and busy > 0:
            out.append(busy / epochs)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4, help="search trials of each study")
    ap.add_argument("--max-train", type=int, default=1500, help="the demo's default")
    ap.add_argument("--out", default=str(RESULTS / "plan_time.json"))
    args = ap.parse_args(argv)

    from autopeft.cli.demo import study_spec
    from autopeft.local_server import LocalServer

    def spec(seed: int) -> dict:
        s = study_spec(minutes=60.0, max_trials=args.trials, max_train=args.max_train)
        # the search's own trials only: no baselines, no early stopping (full trials to time)
        s.update(seed=seed, baselines=[], optimizer={"name": "random", "options": {}})
        s.pop("max_seconds")
        return s

    work = Path(tempfile.mkdtemp(prefix="autopeft-plan-time-"))
    started = time.monotonic()
    with LocalServer(work) as server:
        client = server.client()
        first = client.create_study(spec=spec(0))
        first.wait(poll=2.0, progress=False)
        learned = _busy_per_epoch(first.trials())
        plan = client.plan_study(spec=spec(1))
        second = client.create_study(spec=spec(1))
        second.wait(poll=2.0, progress=False)
        measured = _busy_per_epoch(second.trials())
    predicted = plan["seconds_per_epoch"]
    median = statistics.median(measured) if measured else None
    error = (predicted - median) / median if predicted and median else None
    row = {
        "workload": "the demo's: MiniLM, tweets, lora_per_layer, 1,500 examples, 2 epochs",
        "trials_learned_from": len(learned),
        "trials_measured": len(measured),
        "predicted_s_per_epoch": predicted,
        "measured_s_per_epoch_median": median,
        "measured_s_per_epoch": measured,
        "relative_error": error,
        "goal_within_25pct": error is not None and abs(error) <= 0.25,
    }
    print(
        "| trials learned from | predicted s/epoch | measured s/epoch (median, min-max) | error |"
    )
    print("| --- | --- | --- | --- |")
    if median is not None and predicted is not None:
        print(
            f"| {len(learned)} | {predicted:.1f} | {median:.1f} ({min(measured):.1f}-"
            f"{max(measured):.1f}, {len(measured)} trials) | {100 * error:+.1f}% |"
        )
    print(
        f"GOAL plan time per epoch within 25%: {'met' if row['goal_within_25pct'] else 'not met'}"
    )
    out = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "wall_s": time.monotonic() - started,
        "rows": [row],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
