"""Search quality of autopeft's optimisers against Optuna's samplers, in one run.

Problems (all evaluated sequentially, one suggestion at a time, ``--budget`` evaluations):
  * DTLZ2 (d=6, 2 objectives), ZDT1 (d=6), BraninCurrin (d=2) — BoTorch's test functions,
    minimised, hypervolume w.r.t. their standard reference points;
  * peft_like: per-layer LoRA ranks {0,2,4,8,16,32} for 12 layers, the LoRA target set
    (categorical) and a log learning rate; a synthetic accuracy (maximised) and the exact
    trainable-parameter count of a 768-wide model (minimised; ``mobo`` gets it as a known
    objective, exactly as a user passes ``count_trainable``).
Methods: ``mobo`` (ours) beside Optuna's RandomSampler, TPESampler, NSGAIISampler and
GPSampler with default settings. Reported: mean (std) hypervolume after 50 and 100
evaluations over seeds, % of the maximum hypervolume on BraninCurrin by 86 evaluations,
``mobo.ask()`` p50 latency with 200 and 1,000 told trials beside GPSampler's, and ``mopbt``
vs random search vs scalarised ``pbt`` hypervolume against wall budget on a multi-fidelity
synthetic training problem.

    .venv/bin/python benchmarks/search_quality.py                      # full: 5 seeds, 100 evals
    .venv/bin/python benchmarks/search_quality.py --seeds 1 --budget 30 --latency 50 --quick

Writes ``benchmarks/results/search_quality.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")
import torch  # noqa: E402

torch.set_num_threads(
    1
)  # 2 shared cores: one thread per GP for every method (Optuna GPSampler too)

from autopeft.optim import Exploit, create_optimizer  # noqa: E402
from autopeft.optim import pareto as P  # noqa: E402
from autopeft.optim._optuna import _suggest_config  # noqa: E402
from autopeft.space import SearchSpace  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_quality.json"
OPTUNA_SAMPLERS = ("optuna_random", "optuna_tpe", "optuna_nsga2", "optuna_gp")


# ============================================================================ problems
class Problem:
    name: str
    space: SearchSpace
    objectives: list[tuple[str, str]]
    ref_point: list[float]  # user values
    max_hv: float | None = None
    known: dict = {}

    def evaluate(self, config: dict) -> dict[str, float]:
        raise NotImplementedError

    def hv(self, values: list[dict]) -> float:
        if not values:
            return 0.0
        dirs = [d for _, d in self.objectives]
        Y = P.to_minimization([[v[k] for k, _ in self.objectives] for v in values], dirs)
        ref = P.to_minimization([self.ref_point], dirs)[0]
        return P.hypervolume(Y, ref)


class BoTorchProblem(Problem):
    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn
        d = fn.bounds.shape[1]
        self.lo, self.hi = fn.bounds[0].numpy(), fn.bounds[1].numpy()
        self.space = SearchSpace.from_dict(
            {
                "params": {
                    f"x{i}": {"type": "float", "low": float(self.lo[i]), "high": float(self.hi[i])}
                    for i in range(d)
                }
            }
        )
        self.objectives = [("f0", "minimize"), ("f1", "minimize")]
        self.ref_point = fn.ref_point.tolist()
        self.max_hv = float(fn.max_hv)
        self.known = {}

    def evaluate(self, config):
        import torch

        x = torch.tensor([[config[f"x{i}"] for i in range(len(self.lo))]], dtype=torch.double)
        y = self.fn(x)[0].tolist()
        return {"f0": y[0], "f1": y[1]}


class PeftLike(Problem):
    """Synthetic accuracy of per-layer LoRA on a 12-layer, 768-wide encoder; exact parameter count."""

    TARGETS = {"q,v": (2, 768 + 768), "q,k,v,o": (4, 768 + 768), "ffn_in,ffn_out": (2, 768 + 3072)}

    def __init__(self):
        self.name = "peft_like"
        self.space = SearchSpace.from_dict(
            {
                "params": {"lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True}},
                "peft": {
                    "lora": {
                        "targets": {"choices": list(self.TARGETS)},
                        "rank": {"choices": [0, 2, 4, 8, 16, 32], "per_layer": True},
                    }
                },
            },
            num_layers=12,
        )
        self.objectives = [("accuracy", "maximize"), ("trainable_params", "minimize")]
        self.max_params = self.params(
            {"lora.targets": "ffn_in,ffn_out", **{f"lora.rank.{i}": 32 for i in range(12)}}
        )
        self.ref_point = [0.5, 1.1 * self.max_params]
        self.known = {"trainable_params": self.params}

    def params(self, config) -> float:
        n, width = self.TARGETS[config["lora.targets"]]
        return float(sum(n * config[f"lora.rank.{i}"] * width for i in range(12)))

    def evaluate(self, config):
        ranks = np.array([config[f"lora.rank.{i}"] for i in range(12)], float)
        depth = np.linspace(0.3, 1.0, 12) ** 1.5  # upper layers matter more
        bonus = {"q,v": 1.0, "q,k,v,o": 1.25, "ffn_in,ffn_out": 1.45}[config["lora.targets"]]
        capacity = bonus * float(np.sum(depth * np.log2(1 + ranks)))
        lr_pen = 0.12 * (math.log10(config["lr"]) + 3.3) ** 2  # best lr ~ 5e-4
        lr_pen *= 1.0 + 0.15 * math.log2(1 + ranks.max())  # big ranks are touchier
        acc = 0.55 + 0.37 * (1 - math.exp(-capacity / 9.0)) - lr_pen
        # layers switched off in the middle of an otherwise adapted stack cost a little
        holes = int(np.sum((ranks[1:-1] == 0) & (ranks[:-2] > 0) & (ranks[2:] > 0)))
        return {"accuracy": float(acc - 0.01 * holes), "trainable_params": self.params(config)}


def make_problems(names: list[str]) -> list[Problem]:
    from botorch.test_functions.multi_objective import DTLZ2, ZDT1, BraninCurrin

    table = {
        "dtlz2": lambda: BoTorchProblem("dtlz2", DTLZ2(dim=6, num_objectives=2)),
        "zdt1": lambda: BoTorchProblem("zdt1", ZDT1(dim=6)),
        "branin_currin": lambda: BoTorchProblem("branin_currin", BraninCurrin()),
        "peft_like": PeftLike,
    }
    return [table[n]() for n in names]


# ============================================================================ runners
def run_ours(name: str, problem: Problem, seed: int, budget: int) -> list[dict]:
    """``name`` may carry options: ``mobo:ref_rule=front``."""
    name, _, opts = name.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        options[key] = (
            json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
        )
    if problem.known:
        options["known_objectives"] = problem.known
    opt = create_optimizer(name, problem.space, problem.objectives, seed=seed, **options)
    values = []
    for _ in range(budget):
        (s,) = opt.ask()
        v = problem.evaluate(s.config)
        opt.tell(s.id, v)
        values.append(v)
    return values


def optuna_sampler(name: str, seed: int):
    import optuna

    return {
        "optuna_random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "optuna_tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "optuna_nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "optuna_gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }[name]()


def run_optuna(name: str, problem: Problem, seed: int, budget: int) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=[d for _, d in problem.objectives], sampler=optuna_sampler(name, seed)
    )
    values = []

    def objective(trial):
        v = problem.evaluate(_suggest_config(trial, problem.space))
        values.append(v)
        return [v[k] for k, _ in problem.objectives]

    study.optimize(objective, n_trials=budget)
    return values


def _one_run(task):
    pname, method, seed, budget, checkpoints = task
    import torch

    torch.set_num_threads(1)
    problem = make_problems([pname])[0]
    t0 = time.perf_counter()
    runner = run_optuna if method.startswith("optuna_") else run_ours
    values = runner(method, problem, seed, budget)
    hv = {str(c): problem.hv(values[:c]) for c in checkpoints if c <= len(values)}
    return pname, method, {"seed": seed, "hv": hv, "seconds": time.perf_counter() - t0}


def quality(problems, methods, seeds, budget, checkpoints, log, jobs=1, on_progress=None):
    # seed-major: if the run is cut short, the seeds that finished compare every method
    tasks = [(p.name, m, s, budget, checkpoints) for s in seeds for p in problems for m in methods]
    results: dict = {}
    if jobs > 1:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(jobs)
        iterator = pool.imap_unordered(_one_run, tasks)
    else:
        iterator = map(_one_run, tasks)
    for pname, method, run in iterator:
        results.setdefault((pname, method), []).append(run)
        log(
            f"  {pname:14s} {method:14s} seed {run['seed']}: "
            + " ".join(f"HV@{c}={h:.4g}" for c, h in run["hv"].items())
            + f" ({run['seconds']:.0f}s)"
        )
        if on_progress is not None:
            on_progress(summarise(problems, methods, results, checkpoints))
    return summarise(problems, methods, results, checkpoints)


def summarise(problems, methods, results, checkpoints):
    """Mean / std per checkpoint of the runs finished so far."""
    out = {}
    for problem in problems:
        out[problem.name] = {}
        for method in methods:
            runs = sorted(results.get((problem.name, method), []), key=lambda r: r["seed"])
            if not runs:
                continue
            summary = {}
            for c in checkpoints:
                hs = [r["hv"][str(c)] for r in runs if str(c) in r["hv"]]
                if hs:
                    summary[str(c)] = {
                        "mean": float(np.mean(hs)),
                        "std": float(np.std(hs)),
                        "n": len(hs),
                    }
                    if problem.max_hv:
                        summary[str(c)]["pct_of_max"] = 100 * float(np.mean(hs)) / problem.max_hv
            out[problem.name][method] = {"runs": runs, "summary": summary}
    return out


# ============================================================================ latency
def latency(problem: Problem, told: list[int], repeats: int, log) -> dict:
    """p50 seconds of one ``ask`` with ``n`` told trials (random configs, true values)."""
    import optuna

    out = {}
    for n in told:
        configs = problem.space.sample(n, seed=n)
        values = [problem.evaluate(c) for c in configs]
        opt = create_optimizer(
            "mobo",
            problem.space,
            problem.objectives,
            seed=0,
            **({"known_objectives": problem.known} if problem.known else {}),
        )
        for c, v in zip(configs, values):
            opt.add_trial(c, v)
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            (s,) = opt.ask()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            opt.tell(s.id, problem.evaluate(s.config))
        study = optuna.create_study(
            directions=[d for _, d in problem.objectives], sampler=optuna.samplers.GPSampler(seed=0)
        )
        dists = {}
        for c, v in zip(configs, values):
            probe = optuna.trial.FixedTrial(
                {
                    p.name: (p.index(c[p.name]) if p.kind == "ordinal" else c[p.name])
                    for p in problem.space.params
                    if p.name in c
                }
            )
            _suggest_config(probe, problem.space)
            if not dists:
                dists = probe.distributions
            study.add_trial(
                optuna.trial.create_trial(
                    params=probe.params,
                    distributions=dists,
                    values=[v[k] for k, _ in problem.objectives],
                )
            )
        gp_times, gp_cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            trial = study.ask()
            _suggest_config(trial, problem.space)
            gp_times.append(time.perf_counter() - t0)
            gp_cpu.append(time.process_time() - c0)
            study.tell(
                trial,
                [
                    problem.evaluate(_suggest_config(trial, problem.space))[k]
                    for k, _ in problem.objectives
                ],
            )
        out[str(n)] = {
            "mobo_p50_s": float(np.median(times)),
            "mobo_all_s": times,
            "mobo_cpu_p50_s": float(np.median(cpu)),
            "optuna_gp_p50_s": float(np.median(gp_times)),
            "optuna_gp_all_s": gp_times,
            "optuna_gp_cpu_p50_s": float(np.median(gp_cpu)),
            "load_average": os.getloadavg()[0],
        }
        log(
            f"  latency {problem.name} n={n}: mobo p50 {np.median(times):.2f}s (cpu {np.median(cpu):.2f}s), "
            f"GPSampler p50 {np.median(gp_times):.2f}s (cpu {np.median(gp_cpu):.2f}s), load {os.getloadavg()[0]:.1f}"
        )
    return out


# ============================================================================ PBT
class TrainingSim:
    """Multi-fidelity synthetic training. Knobs: ``lr`` (log), ``dropout`` (mutable) and
    ``width`` (architecture, fixed per trial). Skill ``s`` grows each step at a rate that peaks
    at an lr that *decreases* as training progresses (so schedules found by PBT pay off).
    Objectives (both minimised): ``error`` falls with skill and rises with dropout;
    ``calibration`` error falls with dropout and rises with width — a real trade-off."""

    space = SearchSpace.from_dict(
        {
            "params": {
                "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                "width": {"choices": [8, 16, 32, 64, 128]},
            }
        }
    )
    objectives = [("error", "minimize"), ("calibration", "minimize")]
    ref_point = [1.0, 0.6]

    @staticmethod
    def step(skill: float, config: dict, rng: np.random.Generator) -> tuple[float, dict]:
        best_loglr = -1.5 - 0.7 * skill
        cap = 0.6 + 0.1 * math.log2(config["width"] / 8)
        rate = (
            0.09
            * math.exp(-((math.log10(config["lr"]) - best_loglr) ** 2) / 0.4)
            * (1 - 0.6 * config["dropout"])
            * cap
        )
        skill = skill + rate
        error = 0.05 + 0.9 * math.exp(-skill) + 0.25 * config["dropout"] ** 2 + rng.normal(0, 0.003)
        calib = (
            0.3 * math.exp(-6 * config["dropout"])
            + 0.04 * math.log2(config["width"] / 8)
            + 0.1 * math.exp(-skill)
            + rng.normal(0, 0.003)
        )
        return skill, {"error": float(error), "calibration": float(calib)}


def run_population(
    method: str, seed: int, workers: int, rounds: int, trial_steps: int
) -> list[float]:
    """HV of every reported (checkpoint) point so far, after each round of ``workers`` steps."""
    sim = TrainingSim
    rng = np.random.default_rng(seed + 1000)
    options = {"population_size": workers, "perturbation_interval": 4}
    if method == "pbt":
        opt = create_optimizer(
            "pbt", sim.space, sim.objectives, seed=seed, weights=[0.5, 0.5], **options
        )
    elif method == "mopbt":
        opt = create_optimizer("mopbt", sim.space, sim.objectives, seed=seed, **options)
    else:
        opt = create_optimizer("random", sim.space, sim.objectives, seed=seed)
    slots = {}  # worker -> [trial id, step, skill]
    skills: dict[int, float] = {}
    for w, s in enumerate(opt.ask(workers)):
        slots[w] = [s.id, 0]
        skills[s.id] = 0.0
    points, curve = [], []
    dirs = [d for _, d in sim.objectives]
    ref = P.to_minimization([sim.ref_point], dirs)[0]
    last_values: dict[int, dict] = {}
    for _ in range(rounds):
        for w in range(workers):
            tid, step = slots[w]
            config = opt.trials[tid].config
            skills[tid], values = sim.step(skills[tid], config, rng)
            step += 1
            points.append([values["error"], values["calibration"]])
            last_values[tid] = values
            decision = opt.report(tid, step, values)
            if isinstance(decision, Exploit):
                skills[tid] = skills[decision.source_id]  # load the source's checkpoint
            if method == "random" and step >= trial_steps:
                opt.tell(tid, values)
                (s,) = opt.ask()
                slots[w] = [s.id, 0]
                skills[s.id] = 0.0
            else:
                slots[w] = [tid, step]
        curve.append(P.hypervolume(np.asarray(points), ref))
    return curve


def pbt_curves(seeds, workers, rounds, trial_steps, log) -> dict:
    out = {}
    marks = sorted({max(1, int(rounds * f)) for f in (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)})
    for method in ("random", "pbt", "mopbt"):
        curves = np.array([run_population(method, s, workers, rounds, trial_steps) for s in seeds])
        mean = curves.mean(axis=0)
        out[method] = {
            "steps": [m * workers for m in marks],
            "mean_hv": [float(mean[m - 1]) for m in marks],
            "std_hv": [float(curves[:, m - 1].std()) for m in marks],
        }
        log(f"  pbt-curve {method:6s}: " + " ".join(f"{h:.4f}" for h in out[method]["mean_hv"]))
    return out


# ============================================================================ report
def print_tables(result: dict) -> str:
    lines = []
    q = result.get("quality", {})
    for pname, methods in q.items():
        lines.append(
            f"\n{pname}: hypervolume, mean (std) over {len(result['seeds'])} seeds "
            "(n=k: only k seeds finished)"
        )
        cps = result["checkpoints"]
        lines.append(f"  {'method':14s}" + "".join(f"{'HV@' + str(c):>24s}" for c in cps))
        for m, r in methods.items():
            cells = []
            for c in cps:
                s = r["summary"].get(str(c))
                n = (
                    ""
                    if s is None or s.get("n", len(result["seeds"])) == len(result["seeds"])
                    else f" n={s['n']}"
                )
                cells.append(f"{s['mean']:.4g} ({s['std']:.2g}){n}" if s else "-")
            lines.append(f"  {m:14s}" + "".join(f"{c:>24s}" for c in cells))
    goals = result.get("goals", {})
    if goals:
        lines.append("\nGoals")
        for k, v in goals.items():
            lines.append(f"  {k}: {v}")
    lat = result.get("latency")
    if lat:
        lines.append(
            f"\nask() latency on {lat['problem']} (p50 seconds: wall / CPU time of the asking process)"
        )
        for n, r in lat["results"].items():
            lines.append(
                f"  {n:>5s} told: mobo {r['mobo_p50_s']:.2f} / {r.get('mobo_cpu_p50_s', float('nan')):.2f}   "
                f"GPSampler {r['optuna_gp_p50_s']:.2f} / {r.get('optuna_gp_cpu_p50_s', float('nan')):.2f}"
                f"   (load average {r.get('load_average', float('nan')):.1f})"
            )
    pbt = result.get("pbt")
    if pbt:
        lines.append(
            "\nMulti-fidelity: HV of all checkpoints vs wall budget (total training steps), mean over seeds"
        )
        steps = pbt["random"]["steps"]
        lines.append(f"  {'method':8s}" + "".join(f"{s:>9d}" for s in steps))
        for m, r in pbt.items():
            lines.append(f"  {m:8s}" + "".join(f"{h:9.4f}" for h in r["mean_hv"]))
    text = "\n".join(lines)
    print(text)
    return text


def _seed_values(method: dict, checkpoint: str) -> list[float]:
    """The method's hypervolume at ``checkpoint`` evaluations, one per seed, by seed."""
    runs = sorted(method.get("runs", []), key=lambda r: r["seed"])
    return [float(r["hv"][checkpoint]) for r in runs if checkpoint in r.get("hv", {})]


def evaluate_goals(result: dict) -> dict:
    goals = {}
    q = result.get("quality", {})
    for pname, methods in q.items():
        for variant in [m for m in methods if m.startswith("mobo")]:
            for c in ("50", "100"):
                if c not in methods[variant]["summary"]:
                    continue
                mine = methods[variant]["summary"][c]["mean"]
                others = {
                    m: r["summary"][c]["mean"]
                    for m, r in methods.items()
                    if m.startswith("optuna_") and c in r["summary"]
                }
                if others:
                    best = max(others, key=others.get)
                    n = methods[variant]["summary"][c].get("n")
                    goals[f"{pname} HV@{c} {variant} >= best Optuna"] = (
                        f"{'MET' if mine >= others[best] else 'NOT MET'} ({variant} {mine:.4g} vs {best} "
                        f"{others[best]:.4g}; {n} seed(s))"
                    )
    for pname, methods in q.items():  # issue 30: worst seeds too, every seed shown
        for variant in [m for m in methods if m.startswith("mobo")]:
            mine = _seed_values(methods[variant], "50")
            others = {
                m: _seed_values(r, "50") for m, r in methods.items() if m.startswith("optuna_")
            }
            others = {m: v for m, v in others.items() if v}
            if not mine or not others:
                continue
            best = max(others, key=lambda m: statistics.fmean(others[m]))
            ok = min(mine) >= min(others[best]) and statistics.fmean(mine) >= statistics.fmean(
                others[best]
            )
            goals[f"{pname} HV@50 {variant} worst seed and mean >= best Optuna sampler's"] = (
                f"{'MET' if ok else 'NOT MET'} ({variant} worst {min(mine):.4g}, mean "
                f"{statistics.fmean(mine):.4g}, seeds {', '.join(f'{v:.4g}' for v in mine)}; "
                f"{best} worst {min(others[best]):.4g}, mean {statistics.fmean(others[best]):.4g}, "
                f"seeds {', '.join(f'{v:.4g}' for v in others[best])})"
            )
    for variant, r in q.get("branin_currin", {}).items():
        bc = r.get("summary", {}).get("86")
        if variant.startswith("mobo") and bc:
            goals[f"branin_currin >= 97% of max HV by 86 evals ({variant})"] = (
                f"{'MET' if bc['pct_of_max'] >= 97 else 'NOT MET'} ({bc['pct_of_max']:.1f}%; {bc.get('n')} seed(s))"
            )
    lat = result.get("latency", {}).get("results", {})
    for n, limit in (("200", 1.0), ("1000", 5.0)):
        if n in lat:
            v = lat[n]["mobo_p50_s"]
            c = lat[n].get("mobo_cpu_p50_s", float("nan"))
            goals[f"mobo.ask p50 with {n} told <= {limit:g}s"] = (
                f"{'MET' if v <= limit else 'NOT MET'} (wall {v:.2f}s; CPU {c:.2f}s"
                f"{' — within the goal' if c <= limit else ''}; load average {lat[n].get('load_average', 0):.1f})"
            )
    pbt = result.get("pbt")
    if pbt:
        mo, ra, sc = (pbt[m]["mean_hv"] for m in ("mopbt", "random", "pbt"))
        wins = sum(a > max(b, c) for a, b, c in zip(mo, ra, sc))
        goals["mopbt beats random and scalarised pbt (HV vs budget)"] = (
            f"{'MET' if wins == len(mo) else 'PARTLY' if wins else 'NOT MET'} ({wins}/{len(mo)} budget points)"
        )
    return goals


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--problems", default="dtlz2,zdt1,branin_currin,peft_like")
    ap.add_argument("--methods", default="mobo," + ",".join(OPTUNA_SAMPLERS))
    ap.add_argument(
        "--latency", default="200,1000", help="told-trial counts for the latency test ('' to skip)"
    )
    ap.add_argument("--latency-repeats", type=int, default=5)
    ap.add_argument(
        "--pbt-rounds", type=int, default=120, help="rounds of 8 parallel steps ('0' to skip)"
    )
    ap.add_argument("--quick", action="store_true", help="small PBT run too")
    ap.add_argument("--jobs", type=int, default=1, help="parallel processes for the quality runs")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--merge", nargs="+", help="combine result files of partial runs into --out and print"
    )
    args = ap.parse_args(argv)
    if args.merge:
        merged: dict = {}
        for f in args.merge:
            part = json.loads(Path(f).read_text())
            for key, value in part.items():
                if key == "quality":
                    merged.setdefault("quality", {})
                    for pname, methods_ in value.items():
                        merged["quality"].setdefault(pname, {}).update(methods_)
                elif key in ("checkpoints", "seeds", "budget") and key in merged:
                    continue  # the first file (the main quality run) defines them
                elif key == "command":
                    merged.setdefault("commands", []).append(value)
                elif value or key not in merged:
                    merged[key] = value
        merged["goals"] = evaluate_goals(merged)
        merged["table"] = print_tables(merged)
        Path(args.out).write_text(json.dumps(merged, indent=1))
        return
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    seeds = list(range(args.seeds))
    checkpoints = sorted({c for c in (50, 86, 100, args.budget) if c <= args.budget})
    result = {
        "command": "python benchmarks/search_quality.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "seeds": seeds,
        "budget": args.budget,
        "checkpoints": checkpoints,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        result["goals"] = evaluate_goals(result)
        out_path.write_text(json.dumps(result, indent=1))

    problems = make_problems([p for p in args.problems.split(",") if p])
    methods = [m for m in args.methods.split(",") if m]
    # latency first, while nothing else of this run is using the cores
    told = [int(n) for n in args.latency.split(",") if n]
    if told:
        lp = (
            next((p for p in problems if p.name == "peft_like"), None)
            or make_problems(["peft_like"])[0]
        )
        result["latency"] = {
            "problem": lp.name,
            "results": latency(lp, told, args.latency_repeats, log),
        }
        save()
    log(
        f"quality: {len(problems)} problems x {len(methods)} methods x {len(seeds)} seeds x {args.budget} evals"
    )
    if methods and problems:

        def progress(partial):
            result["quality"] = partial
            save()

        result["quality"] = quality(
            problems, methods, seeds, args.budget, checkpoints, log, args.jobs, progress
        )
        save()
    if args.pbt_rounds:
        rounds = 30 if args.quick else args.pbt_rounds
        result["pbt"] = pbt_curves(seeds, 8, rounds, 40, log)
        save()
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    save()
    result["table"] = print_tables(result)
    out_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
