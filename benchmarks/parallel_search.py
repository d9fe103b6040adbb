"""Search with parallel workers: ``mobo`` with 4 trials in flight against itself run sequentially
and against Optuna's samplers with the same parallelism, in one run.

A simulated cluster of ``--workers`` workers: the k-th suggestion takes ``durations[k]`` time
units (log-normal, sigma 0.5, drawn from the seed, the same for every method), so trials finish
out of order; whenever one finishes it is told and the freed worker asks for the next one. The
others are running: ``mobo`` treats them as pending points of qLogNEHVI; Optuna's samplers see
them as RUNNING trials of the study (TPE's ``constant_liar`` is on by default in Optuna 5;
GPSampler, NSGA-II and random use what they use). Hypervolume is taken over the first N
*completed* evaluations (N = 50 and 100).

Problems: the four of ``search_quality.py`` (DTLZ2 d=6, ZDT1 d=6, BraninCurrin, the PEFT-like
mixed space with its exact parameter count known) plus DTLZ2 with 3 objectives and d = 12.

Goals (issue 19): with 4 in flight, ``mobo``'s mean hypervolume at 100 evaluations is >= 95% of
the sequential ``mobo`` run's and >= the best Optuna sampler's with the same parallelism.

    .venv/bin/python benchmarks/parallel_search.py                    # 3 seeds, 100 evals
    .venv/bin/python benchmarks/parallel_search.py --seeds 1 --budget 24 --problems zdt1

Writes ``benchmarks/results/parallel_search.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import heapq
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import (  # after the sys.path line: also puts the repository on sys.path
    OPTUNA_SAMPLERS,
    BoTorchProblem,
    make_problems,
    optuna_sampler,
)

from autopeft.optim import create_optimizer
from autopeft.optim._optuna import _suggest_config

RESULTS = Path(__file__).resolve().parent / "results" / "parallel_search.json"
CHECKPOINTS = (50, 100)


def checkpoints(budget: int) -> list[int]:
    """50 and 100 completed evaluations, and the budget itself."""
    return sorted({c for c in CHECKPOINTS if c < budget} | {budget})


class ManyObjectiveProblem(BoTorchProblem):
    """A BoTorch test function with any number of objectives (all minimised)."""

    def __init__(self, name: str, fn):
        super().__init__(name, fn)
        self.objectives = [(f"f{i}", "minimize") for i in range(fn.num_objectives)]

    def evaluate(self, config):
        import torch

        x = torch.tensor([[config[f"x{i}"] for i in range(len(self.lo))]], dtype=torch.double)
        return {f"f{i}": float(y) for i, y in enumerate(self.fn(x)[0].tolist())}


def problems(names: list[str]) -> list:
    from botorch.test_functions.multi_objective import DTLZ2

    out = []
    for name in names:
        if name == "dtlz2_3obj":
            out.append(ManyObjectiveProblem(name, DTLZ2(dim=12, num_objectives=3)))
        else:
            out.extend(make_problems([name]))
    return out


def durations(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(10_000 + seed).lognormal(0.0, 0.5, size=n)


class _Ours:
    def __init__(self, name, problem, seed):
        options = {"known_objectives": problem.known} if problem.known else {}
        self.opt = create_optimizer(name, problem.space, problem.objectives, seed=seed, **options)

    def ask(self):
        (s,) = self.opt.ask()
        return s.id, s.config

    def tell(self, handle, values, problem):
        self.opt.tell(handle, values)


class _Optuna:
    def __init__(self, name, problem, seed):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = problem.space
        self.study = optuna.create_study(
            directions=[d for _, d in problem.objectives], sampler=optuna_sampler(name, seed)
        )

    def ask(self):
        trial = self.study.ask()
        return trial, _suggest_config(trial, self.space)

    def tell(self, handle, values, problem):
        self.study.tell(handle, [values[k] for k, _ in problem.objectives])


def simulate(method: str, problem, seed: int, budget: int, workers: int) -> list[dict]:
    """Values in completion order of ``budget`` evaluations with ``workers`` in flight."""
    driver = (_Optuna if method.startswith("optuna_") else _Ours)(method, problem, seed)
    took = durations(seed, budget)
    heap: list = []  # (finish time, suggestion index, handle, config)
    asked, now, values = 0, 0.0, []
    while len(values) < budget:
        while len(heap) < workers and asked < budget:
            handle, config = driver.ask()
            heapq.heappush(heap, (now + took[asked], asked, handle, config))
            asked += 1
        now, _, handle, config = heapq.heappop(heap)
        v = problem.evaluate(config)
        driver.tell(handle, v, problem)
        values.append(v)
    return values


def _one_run(task):
    pname, method, workers, seed, budget = task
    import torch

    torch.set_num_threads(1)
    problem = problems([pname])[0]
    t0 = time.perf_counter()
    values = simulate(method, problem, seed, budget, workers)
    hv = {str(c): problem.hv(values[:c]) for c in checkpoints(budget)}
    return pname, f"{method}@{workers}", {"seed": seed, "hv": hv, "s": time.perf_counter() - t0}


def summarise(results: dict, budget: int) -> dict:
    out: dict = {}
    for (pname, key), runs in sorted(results.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        row = {}
        for c in checkpoints(budget):
            hs = [r["hv"][str(c)] for r in runs if str(c) in r["hv"]]
            if hs:
                row[str(c)] = {"mean": float(np.mean(hs)), "std": float(np.std(hs)), "n": len(hs)}
        out.setdefault(pname, {})[key] = {"runs": runs, "summary": row}
    return out


def goals(summary: dict, workers: int, budget: int) -> dict:
    out = {}
    c = str(budget)
    for pname, rows in summary.items():
        mean = {k: v["summary"].get(c, {}).get("mean") for k, v in rows.items()}
        par, seq = mean.get(f"mobo@{workers}"), mean.get("mobo@1")
        optuna = {k: m for k, m in mean.items() if k.startswith("optuna_") and m is not None}
        best_k = max(optuna, key=optuna.get) if optuna else None
        out[pname] = {
            "mobo_parallel": par,
            "mobo_sequential": seq,
            "ratio": par / seq if par is not None and seq else None,
            "best_optuna": best_k,
            "best_optuna_hv": optuna.get(best_k),
            "ratio_ok": bool(par is not None and seq and par >= 0.95 * seq),
            "beats_optuna": bool(par is not None and best_k and par >= optuna[best_k]),
        }
    return out


def table(summary: dict, goal: dict, budget: int) -> str:
    cps = checkpoints(budget)
    lines = []
    for pname, rows in summary.items():
        lines.append(f"\n{pname}")
        lines.append(
            f"  {'method@in flight':22s}" + "".join(f"{'HV@' + c:>22s}" for c in map(str, cps))
        )
        for key, row in rows.items():
            cells = "".join(
                f"{row['summary'][str(c)]['mean']:>14.5g} ({row['summary'][str(c)]['std']:.2g})"
                if str(c) in row["summary"]
                else f"{'-':>22s}"
                for c in cps
            )
            lines.append(f"  {key:22s}{cells}")
        g = goal.get(pname)
        if g and g["ratio"] is not None and g["best_optuna"] is not None:
            lines.append(
                f"  parallel / sequential {100 * g['ratio']:.1f}% (goal >= 95%: "
                f"{'met' if g['ratio_ok'] else 'NOT met'}); best Optuna {g['best_optuna']} "
                f"{g['best_optuna_hv']:.5g} ({'beaten' if g['beats_optuna'] else 'NOT beaten'})"
            )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--problems", default="dtlz2,zdt1,branin_currin,peft_like,dtlz2_3obj")
    ap.add_argument("--optuna", default=",".join(OPTUNA_SAMPLERS))
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--update",
        action="store_true",
        help="keep the other problems' results already in --out (replace only those run now)",
    )
    args = ap.parse_args(argv)

    names = args.problems.split(",")
    methods = [("mobo", 1), ("mobo", args.workers)] + [
        (m, args.workers) for m in filter(None, args.optuna.split(","))
    ]
    # the slow runs first so the pool ends evenly
    tasks = [
        (p, m, w, s, args.budget)
        for s in range(args.seeds)
        for p in sorted(names, key=lambda n: n != "dtlz2_3obj")
        for m, w in methods
    ]
    results: dict = {}
    t0 = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept, commands = {}, []
    if args.update and out.exists():
        old = json.loads(out.read_text())
        if (old["workers"], old["budget"], old["seeds"]) != (args.workers, args.budget, args.seeds):
            ap.error("--update: --out was made with other --workers / --budget / --seeds")
        kept = {k: v for k, v in old["results"].items() if k not in names}
        commands = old.get("commands", [old["command"]])
    command = "benchmarks/parallel_search.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def save(final=False):
        summary = {**kept, **summarise(results, args.budget)}
        goal = goals(summary, args.workers, args.budget)
        doc = {
            "command": command,
            "commands": [*commands, command],
            "workers": args.workers,
            "budget": args.budget,
            "seeds": args.seeds,
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "seconds": time.perf_counter() - t0,
            "complete": final,
            "results": summary,
            "goals": goal,
        }
        out.write_text(json.dumps(doc, indent=1))
        return summary, goal

    if args.jobs > 1:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(args.jobs)
        iterator = pool.imap_unordered(_one_run, tasks)
    else:
        iterator = map(_one_run, tasks)
    for pname, key, run in iterator:
        results.setdefault((pname, key), []).append(run)
        print(
            f"  {pname:14s} {key:16s} seed {run['seed']}: "
            + " ".join(f"HV@{c}={h:.5g}" for c, h in run["hv"].items())
            + f" ({run['s']:.0f}s)",
            flush=True,
        )
        save()
    summary, goal = save(final=True)
    print(table(summary, goal, args.budget))
    print(f"\nwrote {out} in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
