"""The training-data-size fidelity, measured on the table: does a run on a fraction of the
training data rank configs better than the epoch fidelity MO-ASHA already uses, at the same cost?

    .venv/bin/python benchmarks/peft_table/fidelity.py --task tweets --record   # the runs (~55 min, 2 cores)
    .venv/bin/python benchmarks/peft_table/fidelity.py --task tweets            # the comparison

``--record`` trains every candidate a search can ask (the Sobol points, the adapter-free corner
and LoRA r4 / r8 / r16) of the task's table with training seed 0 on
``--fraction`` of its training data (``TrialContext.budget = {"fraction": f}``: a stratified
subset; the validation and test splits stay the table's), for the task's full epochs, recorded as
the table's runs are (``record.py``) in ``data/<task>.frac<NN>.runs.jsonl`` beside the table (its
own meta; the table and its fingerprint are untouched). Resumable like ``build.py``.

The comparison ranks the candidates by each cheap signal and scores the ranking against the
table's truth (seed-mean test accuracy at the full fidelity):

* ``data f``: the fraction run's validation accuracy at its last report (cost ``f`` x the full
  run's epochs);
* ``epoch e``: the full run's (seed 0) validation accuracy at its report at epoch ``e`` (what
  MO-ASHA's rungs see; cost ``e`` epochs);

by Spearman's rho and Kendall's tau, the share of the truly best third that the signal's best
third holds (the cut successive halving with reduction factor 3 makes), and the regret of the
signal's top pick (best truth minus the truth of the signal's best). A paired bootstrap over
candidates gives each epoch signal's rho difference from the data signal (mean, 95% interval).
Writes ``benchmarks/results/fidelity_<task>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tasks import DATA, TASKS, candidates  # noqa: E402

RESULTS = HERE.parent / "results"
FRACTION = 1 / 3
BOOTSTRAP = 2000


def frac_task(task: str, fraction: float) -> str:
    """The name the fraction runs are recorded under (``data/<name>.runs.jsonl``)."""
    return f"{task}.frac{round(fraction * 100):02d}"


def record_fraction(
    task: str, fraction: float, seeds: list[int], workers: int, minutes: float | None
) -> None:
    from build import record
    from table import LORA_BASELINES

    cands = [
        {**c, "budget": {"fraction": fraction}}
        for c in candidates(task)
        if c["kind"] in ("sobol", "zero") or c["id"] in LORA_BASELINES
    ]
    record(frac_task(task, fraction), TASKS[task], cands, seeds, workers, minutes)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (nan where either side is constant)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(a, b).statistic)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (nan where either side is constant)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.kendalltau(a, b).statistic)


def top_share(signal: np.ndarray, truth: np.ndarray, share: float = 1 / 3) -> float:
    """Of the truly best ``share`` of candidates, the part the signal's best ``share`` holds."""
    k = max(1, int(round(share * len(truth))))
    best = set(np.argsort(-truth, kind="mergesort")[:k].tolist())
    picked = set(np.argsort(-signal, kind="mergesort")[:k].tolist())
    return len(best & picked) / k


def regret(signal: np.ndarray, truth: np.ndarray) -> float:
    """Best truth minus the truth of the signal's top pick."""
    return float(truth.max() - truth[int(np.argmax(signal))])


def signals(task: str, fraction: float, data: Path = DATA) -> tuple[list[str], dict, np.ndarray]:
    """``(candidate ids, {name: (cost in epochs, values)}, truth)`` over the Sobol candidates the
    fraction runs and the table both hold."""
    from table import Table

    table = Table.load(task, data)
    low = Table.load(frac_task(task, fraction), data)
    meta = json.loads((data / f"{task}.meta.json").read_text())
    low_meta = json.loads((data / f"{frac_task(task, fraction)}.meta.json").read_text())
    if low_meta["val_index"] != meta["val_index"] or low_meta["test_index"] != meta["test_index"]:
        raise ValueError(f"{frac_task(task, fraction)} was recorded on other splits than {task}")
    ids = [
        c for c in table.search_ids if table.candidates[c].kind == "sobol" and c in low.candidates
    ]
    if not ids:
        raise ValueError(f"no Sobol candidate has a run at fraction {fraction:g} yet")
    truth = np.array([table.candidates[c].truth(table.candidates[c].reports) for c in ids])
    first = table.candidates[ids[0]]
    epochs = float(first.epochs[-1])
    out: dict[str, tuple[float, np.ndarray]] = {
        f"data {fraction:.2f}": (
            fraction * epochs,
            np.array([low.candidates[c].val_acc[0, -1] for c in ids]),
        )
    }
    for k, e in enumerate(first.epochs):
        out[f"epoch {e:g}"] = (
            float(e),
            np.array([table.candidates[c].val_acc[0, k] for c in ids]),
        )
    return ids, out, truth


def compare(task: str, fraction: float = FRACTION, data: Path = DATA, seed: int = 0) -> dict:
    ids, sigs, truth = signals(task, fraction, data)
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, len(ids), len(ids)) for _ in range(BOOTSTRAP)]
    data_name = next(iter(sigs))
    rows = {}
    for name, (cost, values) in sigs.items():
        row = {
            "cost_epochs": cost,
            "spearman": spearman(values, truth),
            "kendall": kendall(values, truth),
            "top_third": top_share(values, truth),
            "regret": regret(values, truth),
        }
        if name != data_name:  # paired over candidates: this signal's rho minus the data signal's
            d = np.array(
                [
                    spearman(values[b], truth[b]) - spearman(sigs[data_name][1][b], truth[b])
                    for b in boots
                ]
            )
            d = d[np.isfinite(d)]  # a resample of tied values has no rank correlation
            if len(d):
                row["rho_minus_data"] = float(d.mean())
                row["rho_minus_data_ci"] = [
                    float(np.quantile(d, 0.025)),
                    float(np.quantile(d, 0.975)),
                ]
        rows[name] = row
    return {"task": task, "fraction": fraction, "candidates": len(ids), "signals": rows}


def print_table(result: dict) -> None:
    print(
        f"\n{result['task']}: {result['candidates']} Sobol candidates, truth = seed-mean test "
        "accuracy at the full fidelity"
    )
    print(
        "| signal | cost (epochs) | Spearman rho | Kendall tau | best third kept | top-pick "
        "regret | rho minus the data signal's (95% bootstrap) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in result["signals"].items():
        diff = (
            f"{r['rho_minus_data']:+.2f} [{r['rho_minus_data_ci'][0]:+.2f}, "
            f"{r['rho_minus_data_ci'][1]:+.2f}]"
            if "rho_minus_data_ci" in r
            else "-"
        )
        print(
            f"| {name} | {r['cost_epochs']:.2f} | {r['spearman']:.2f} | {r['kendall']:.2f} | "
            f"{r['top_third']:.0%} | {r['regret']:.3f} | {diff} |"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=list(TASKS), action="append")
    ap.add_argument("--fraction", type=float, default=FRACTION)
    ap.add_argument("--record", action="store_true", help="train the fraction runs first")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--minutes", type=float, help="start no run after this many minutes")
    args = ap.parse_args(argv)
    out = {}
    for task in args.task or list(TASKS):
        if args.record:
            record_fraction(task, args.fraction, args.seeds, args.workers, args.minutes)
        elif not (DATA / f"{frac_task(task, args.fraction)}.runs.jsonl").exists():
            print(f"\n{task}: no runs at {args.fraction:g} of the data (add --record)")
            continue
        result = out[task] = compare(task, args.fraction)
        print_table(result)
    RESULTS.mkdir(exist_ok=True)
    for task, result in out.items():
        path = RESULTS / f"fidelity_{task}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
