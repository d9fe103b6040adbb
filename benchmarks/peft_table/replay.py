"""Replay a study against the table: the service's own optimiser, early stopping, baselines and
budget rules, with the trials' results looked up instead of trained.

``replay(table, method, rep, budget)`` builds the study spec the service would store (its
``validate_spec``: default optimiser, implicit baselines, MO-ASHA's ``max_step``), the optimiser
the scheduler would build (``build_optimizer``), and runs the scheduler's loop on a simulated
clock: ``max_parallel`` trials at a time, baselines first, new trials asked while the compute
spent (epochs of ended and paused trials, plus what each run in flight is planned to train) is
below ``max_epochs``, several asked at once when several slots free together; every report of a
search trial goes through ``opt.report`` (MO-ASHA may stop it: told ``pruned`` at that report's
values; with promotions it may pause it, and a paused trial the optimiser names is resumed
before anything new is asked), the last one ends it (told ``complete``); paused trials the budget
never resumed are told ``pruned`` at the end. Each report takes the same simulated time (the linear
probe a third of an epoch's). With ``Method.data_rung`` a search trial first runs its recorded run
on that fraction of the training data (``fidelity.py``), one report as step 1, before its full run.

Noise, as a live study sees it (``rep`` seeds all of it, the same for every method: paired):
the validation examples are a bootstrap sample of the recorded split, fixed for the whole study;
a candidate's first run uses a training seed drawn for it, a second run of it the next seed.

What is scored: the front the study would answer (complete search trials and baselines,
non-dominated on the values it saw), at the candidates' *true* values (seed-mean test accuracy at
the report the trial reached, and trainable parameters), after every trial that ended.
"""

from __future__ import annotations

import heapq
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from table import LORA_BASELINES, Table, _front_mask, adapter_free, hypervolume  # noqa: E402

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]
PROBE_TIME = 2.0 / 3.0  # reports' time of the probe: a third of an epoch at two reports an epoch


@dataclass
class Method:
    """A study as a user would create it: the optimiser part of the spec (None: the service's
    default) and its baselines (None: the implicit ones)."""

    name: str
    optimizer: dict | None = None
    baselines: Any = None
    space: str = "lora_per_layer"
    extra: dict = field(default_factory=dict)  # more spec fields (e.g. max_parallel)
    inform: bool = False  # baselines that are points of the space are told to the optimiser
    replicates: int = 1  # spec.replicates: the front's candidates run again with more seeds
    portfolio: int = 0  # warm start from this many configs chosen on the *other* task's table
    prior: tuple[str, ...] = ()  # hand-picked candidates (e.g. lora_r8) asked first, as warm_start
    #: False: the optimiser may ask adapter-free configs even with the probe beside it (the
    #: service's behaviour before ``api.study.adapter_free_exclusion``)
    exclude_adapter_free: bool = True
    #: a training-data-size rung (0: none): each search trial first trains on this fraction of
    #: the training data for the workload's epochs (its recorded run, ``fidelity.py``), reporting
    #: once as step 1; one that early stopping keeps (or later promotes) then trains on all of it
    #: from the start, its reports as steps 2, 3, ...: a trial pays the fraction's epochs and the
    #: full run's
    data_rung: float = 0.0


@dataclass
class Ended:
    """A trial as it ended in the replay."""

    kind: str  # search | baseline | replicate
    cid: str
    report: int  # the last report it made (1-based)
    state: str  # complete | pruned
    accuracy: float  # the validation accuracy it was selected on
    params: float
    epochs: float  # epochs it trained
    started_used: float  # compute counted when it started (spent + planned in flight)
    root: int = -1  # a replicate's: the index of the trial it repeats (in ``Result.ended``)


@dataclass
class Result:
    method: str
    rep: int
    budget: float
    ended: list[Ended]
    curve: list[tuple[float, float, float]]  # (compute spent, true HV, HV on what was seen)
    asks: int = 0
    zero_asks: int = 0  # asks of an adapter-free config (the head alone)
    #: asks made when the study had run every candidate they could map to: the table ran out, so
    #: the ask ran a candidate again (another training seed where the table has one, else the same
    #: run) where a live study would have trained a config it had not
    repeat_asks: int = 0
    spent: float = 0.0  # the compute (trial-epochs) every run of the study trained, in all

    def front(self) -> list[Ended]:
        """The candidates the study answers with: complete trials selected on the mean of their
        runs (with replicates; else their one value), each as its own trial."""
        return [e for e, _ in _select(self.ended)]


def study_spec(table: Table, method: Method, rep: int, budget: float) -> dict:
    """The spec the service stores for this method's study (validated, normalised)."""
    from autopeft.api.services.spec import validate_spec

    return validate_spec(raw_spec(table, method, rep, budget))


def raw_spec(table: Table, method: Method, rep: int, budget: float) -> dict:
    """The study a user would create for this method (what ``POST /studies`` takes)."""
    return {
        "name": f"{table.task}/{method.name}/{rep}",
        "space": method.space,
        "objectives": OBJECTIVES,
        "optimizer": method.optimizer,
        "workload": dict(table.workload),
        "max_trials": 100_000,
        "max_parallel": 2,
        "max_seconds": None,
        "max_epochs": float(budget),
        "seed": rep,
        "baselines": method.baselines,
        "num_layers": None,
        "reference_point": None,
        **method.extra,
    }


class _Noise:
    """The repetition's draws: the validation bootstrap and each candidate's training seeds
    (``exact``: the recorded split as it is and every candidate's first recorded seed: what a live
    study with that seed saw)."""

    def __init__(self, table: Table, rep: int, exact: bool = False):
        rng = np.random.default_rng([rep, 7919])
        self.val_index = (
            np.arange(table.n_val) if exact else rng.integers(0, table.n_val, table.n_val)
        )
        self.first_seed = {
            cid: 0 if exact else int(rng.integers(0, 1 << 16)) for cid in sorted(table.candidates)
        }
        self.runs: dict[str, int] = {}

    def next_seed(self, cid: str) -> int:
        n = self.runs.get(cid, 0)
        self.runs[cid] = n + 1
        return self.first_seed[cid] + n


def replay(
    table: Table,
    method: Method,
    rep: int,
    budget: float,
    spec: dict | None = None,
    exact: bool = False,
) -> Result:
    from autopeft.api.study import build_optimizer, build_space
    from autopeft.trials.baselines import baseline_name

    spec = spec or study_spec(table, method, rep, budget)
    space = build_space(spec)
    low = _low_table(table, method.data_rung) if method.data_rung else None
    if not method.exclude_adapter_free:
        spec = {**spec, "optimizer": {**spec["optimizer"]}}
        spec["optimizer"]["options"] = {
            **(spec["optimizer"].get("options") or {}),
            "exclude": lambda config: False,
        }
    opt = build_optimizer(spec, space)
    noise = _Noise(table, rep, exact)
    todo = [baseline_name(b) for b in spec["baselines"]]
    max_parallel = int(spec["max_parallel"])
    limit = float(spec["max_epochs"])
    max_trials = int(spec["max_trials"])
    created = 0
    clock, seq = 0.0, 0
    events: list = []
    running: dict[int, dict] = {}
    paused: dict[int, dict] = {}  # optimiser id -> the run waiting at a rung
    ran: set[str] = set()  # candidates this study's search ran (an ask maps to an unrun one)
    spent = 0.0
    ended: list[Ended] = []
    curve: list[tuple[float, float, float]] = []
    asks = zero_asks = repeat_asks = 0
    ref_acc, ref_params = table.reference(_base_params(table))

    def used() -> float:
        return spent + sum(max(r["planned"], r["progress"]) for r in running.values())

    def start(kind: str, cid: str, opt_id: int | None, resumed: dict | None = None) -> None:
        nonlocal seq
        c = table.candidates[cid]
        seq += 1
        run = resumed or {
            "kind": kind,
            "cid": cid,
            "opt_id": opt_id,
            "seed": noise.next_seed(cid),
            "report": 0,
            "trained": 0.0,  # epochs of earlier runs of this trial (paused, then resumed)
            "started_used": used(),
        }
        step = PROBE_TIME if c.reports == 1 and c.epochs[0] < 0.5 else 1.0
        if low is not None and kind == "search" and run.get("phase") != "full":
            if resumed is None:  # the data rung first: one report after the fraction's epochs
                run["phase"] = "low"
                run["planned"] = low_epochs(c)
                step *= low_epochs(c) / float(c.epochs[0])
            else:  # kept at the data rung later (a promotion)
                _to_full(run)
        if run.get("phase") != "low":
            run["planned"] = float(c.epochs[-1]) - run["trained"]
        run["progress"] = 0.0
        running[seq] = run
        run["step_time"] = step
        heapq.heappush(events, (clock + step, seq))

    def low_epochs(c) -> float:
        return method.data_rung * float(c.epochs[-1])

    def _to_full(run: dict) -> None:
        """A run kept at the data rung: all the data now, from the start."""
        c = table.candidates[run["cid"]]
        run["phase"], run["low_cost"] = "full", low_epochs(c)
        run["report"], run["trained"], run["progress"] = 0, 0.0, 0.0
        run["planned"], run["step_time"] = float(c.epochs[-1]), 1.0

    def fill() -> None:
        nonlocal asks, zero_asks, repeat_asks, created
        while len(running) < max_parallel and used() < limit:
            if todo and created < max_trials:
                name = todo.pop(0)
                if name in table.candidates:
                    start("baseline", name, None)
                    created += 1
                continue
            promoted = opt.promotion()
            if promoted is not None:
                opt.resume(promoted)
                run = paused.pop(promoted)
                start(run["kind"], run["cid"], promoted, run)
                continue
            n = min(max_parallel - len(running), max_trials - created)
            if n <= 0:
                return
            for s in opt.ask(n):
                asks += 1
                zero_asks += adapter_free(s.config)
                created += 1
                cid = table.nearest(s.config, ran)
                repeat_asks += cid in ran
                ran.add(cid)
                start("search", cid, s.id)

    fill()
    while events:
        clock, key = heapq.heappop(events)
        run = running[key]
        c = table.candidates[run["cid"]]
        if run.get("phase") == "low":  # the data rung's one report: step 1
            k, step, last = 1, 1, False
            run["progress"] = low_epochs(c)
            values = {
                "accuracy": low.observed(
                    run["cid"], run["seed"], low.candidates[run["cid"]].reports, noise.val_index
                ),
                "epoch": low_epochs(c),
                "trainable_params": float(c.params),
            }
        else:
            run["report"] += 1
            k = run["report"]
            # behind a data rung the full run's reports are steps 2, 3, ...
            step = k + (run.get("phase") == "full")
            run["progress"] = float(c.epochs[k - 1]) - run["trained"]
            values = {
                "accuracy": table.observed(run["cid"], run["seed"], k, noise.val_index),
                "epoch": float(c.epochs[k - 1]),
                "trainable_params": float(c.params),
            }
            last = k >= c.reports
        state = None
        if run["kind"] == "search":
            decision = opt.report(run["opt_id"], step, values)
            if last:
                state = "complete"
            elif decision == "pause":
                state = "paused"
            elif decision != "continue":
                state = "pruned"
            if state in ("complete", "pruned"):
                opt.tell(run["opt_id"], values, state=state)
        elif last:
            state = "complete"
            if method.inform and run["cid"] in LORA_BASELINES:  # a design point of the space
                opt.add_trial(table.search_config(run["cid"]), values, "complete")
        if state is None and run.get("phase") == "low":
            spent += run["progress"]
            _to_full(run)
        if state is None:
            heapq.heappush(events, (clock + run["step_time"], key))
            continue
        del running[key]
        spent += run["progress"]
        if state == "paused":
            run["trained"] += run["progress"]
            run["values"] = values
            paused[run["opt_id"]] = run
            fill()
            continue
        ended.append(
            Ended(
                run["kind"],
                run["cid"],
                k,
                state,
                values["accuracy"],
                values["trainable_params"],
                run.get("low_cost", 0.0) + run["trained"] + run["progress"],
                run["started_used"],
            )
        )
        curve.append((spent, *_hvs(table, ended, ref_acc, ref_params)))
        fill()
    for opt_id, run in paused.items():  # the budget ended first: pruned where they waited
        opt.tell(opt_id, run["values"], state="pruned")
        ended.append(
            Ended(
                run["kind"],
                run["cid"],
                max(run["report"], 1),
                "pruned",
                run["values"]["accuracy"],
                run["values"]["trainable_params"],
                run.get("low_cost", 0.0) + run["trained"],
                run["started_used"],
            )
        )
    if method.replicates > 1:  # the search ended: its front's candidates get more seeds
        spent = _replicate(table, method.replicates, ended, noise, spent)
        curve.append((spent, *_hvs(table, ended, ref_acc, ref_params)))
    return Result(method.name, rep, limit, ended, curve, asks, zero_asks, repeat_asks, spent)


def _replicate(table: Table, k: int, ended: list[Ended], noise, spent: float) -> float:
    """Run the front's candidates again until each has ``k`` runs (re-selecting after each
    round, as the scheduler does); returns the compute spent with them."""
    for _ in range(24):
        todo = []
        for root, _ in _select(ended):
            i = next(j for j, e in enumerate(ended) if e is root)
            have = 1 + sum(1 for e in ended if e.kind == "replicate" and e.root == i)
            todo += [(i, root)] * (k - have)
        if not todo:
            break
        for i, root in todo:
            c = table.candidates[root.cid]
            seed = noise.next_seed(root.cid)
            acc = table.observed(root.cid, seed, c.reports, noise.val_index)
            ended.append(
                Ended(
                    "replicate",
                    root.cid,
                    c.reports,
                    "complete",
                    acc,
                    root.params,
                    float(c.epochs[-1]),
                    spent,
                    i,
                )
            )
            spent += float(c.epochs[-1])
    return spent


def _select(ended: list[Ended]) -> list[tuple[Ended, float]]:
    """The front selected on what was seen: ``(trial, mean validation accuracy of its runs)`` of
    the complete trials that are not replicates, each with its replicates' values averaged in."""
    runs: dict[int, list[float]] = {}
    for i, e in enumerate(ended):
        if e.state == "complete":
            runs.setdefault(i if e.kind != "replicate" else e.root, []).append(e.accuracy)
    roots = [(ended[i], sum(v) / len(v)) for i, v in runs.items() if ended[i].state == "complete"]
    keep = _front_mask([(acc, e.params) for e, acc in roots])
    return [r for r, k in zip(roots, keep) if k]


def _hvs(
    table: Table, ended: list[Ended], ref_acc: float, ref_params: float
) -> tuple[float, float]:
    """(true HV, seen HV) of the front selected on what was seen."""
    chosen = _select(ended)
    if not chosen:
        return 0.0, 0.0
    truth = [(table.candidates[e.cid].truth(e.report), e.params) for e, _ in chosen]
    seen = [(acc, e.params) for e, acc in chosen]
    return hypervolume(truth, ref_acc, ref_params), hypervolume(seen, ref_acc, ref_params)


_LOW: dict[tuple[str, float], Table] = {}


def _low_table(table: Table, fraction: float) -> Table:
    """The task's runs at ``fraction`` of the training data (``fidelity.py --record``)."""
    from fidelity import frac_task

    key = (table.task, fraction)
    if key not in _LOW:
        low = Table.load(frac_task(table.task, fraction))
        missing = [c for c in table.search_ids if c not in low.candidates]
        if missing:
            raise ValueError(
                f"{frac_task(table.task, fraction)} has no run of {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}: fidelity.py --record"
            )
        _LOW[key] = low
    return _LOW[key]


_BASE: dict[str, int] = {}


def _base_params(table: Table) -> int:
    """The model's parameter count (the reference point's 2% is of it)."""
    if table.task not in _BASE:
        full = table.candidates.get("full_finetune")
        if full is not None:
            _BASE[table.task] = full.params
        else:  # a table still without its full fine-tuning runs: count the model on meta
            import json

            from autopeft.models import load_model_config
            from autopeft.peft.memory import _model_bytes

            cfg = load_model_config(table.workload["model"])
            _BASE[table.task] = _model_bytes(json.dumps(cfg.to_dict()), "classification", 3)[1]
    return _BASE[table.task]


def best_hv(table: Table) -> float:
    """HV of the best front the table allows: every candidate at its last report, true values."""
    ref_acc, ref_params = table.reference(_base_params(table))
    return hypervolume(table.best_points(), ref_acc, ref_params)


def compute_to_reach(result: Result, target: float) -> float:
    """Compute spent when the true HV first reached ``target`` (inf: never)."""
    for spent, hv, _ in result.curve:
        if hv >= target - 1e-12:
            return spent
    return math.inf
