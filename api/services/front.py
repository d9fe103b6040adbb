"""The Pareto front and hypervolume of a study, on the validation or the held-out test split
(feasible trials only).

A point of the front is a candidate's complete runs (:class:`Runs`): the trial the search (or a
baseline) ran, plus its ``replicate`` trials when the study asked for ``replicates`` (the same
config with other training seeds). Its values are the means over those runs, so the front is
selected on seed means, not on one noisy number; with one run it is that trial, as before.

This module computes (fronts, intervals); the answers of the REST endpoints that show them
(``pareto``, ``hypervolume``, ``compare``) are :mod:`autopeft.api.services.front_views`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft.api.models import Study, Trial
from autopeft.api.study import constraints_of, objectives_of, trial_feasible

SPLITS = ("validation", "test")
#: objectives that are a share of examples: a front point carries their 95% interval
PROPORTIONS = ("accuracy", "exact_match")
Z95 = 1.959963984540054


def test_name(metric: str) -> str:
    """The held-out counterpart of a validation metric (``accuracy`` -> ``test_accuracy``)."""
    return f"test_{metric}"


def on_test(t: Any, names: list[str]) -> dict[str, Any] | None:
    """``t``'s (a trial's, or a candidate's :class:`Runs`') objective values with the held-out
    test metrics in place of the validation ones (an objective the test evaluation does not
    measure, e.g. ``trainable_params``, is kept); None while it has no test values."""
    if not t.test_values:
        return None
    values = dict(t.values or {})
    for name in names:
        if test_name(name) in t.test_values:
            values[name] = t.test_values[test_name(name)]
    return values


def hidden_on_test(g: Any) -> bool:
    """A candidate left off the test-split front: an attached result (measured elsewhere, never
    evaluated here) without held-out test values its user reported (``services.outside``)."""
    return g.root.kind == "attached" and not g.test_values


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a share ``p`` of ``n`` examples (it stays in [0, 1] and
    keeps its width at 0 and 1, where p +- z * se collapses)."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def intervals(
    values: dict[str, Any] | None,
    examples: Any,
    names: list[str],
    spread: dict[str, dict[str, float]] | None = None,
    runs: int = 1,
) -> dict:
    """95% intervals of the objectives in ``names`` that are shares (:data:`PROPORTIONS`),
    measured on ``examples`` examples; none when the count or the value is unknown. With
    ``runs`` > 1 (replicates), the value is a mean over training seeds and the interval also
    holds their variance: the Wilson interval's half-widths widened by ``z * sd / sqrt(runs)``
    (added in quadrature)."""
    if not values or not isinstance(examples, (int, float)) or not examples >= 1:
        return {}
    n = int(examples)
    out = {}
    for name in names:
        p = values.get(name)
        if name in PROPORTIONS and isinstance(p, (int, float)) and 0.0 <= p <= 1.0:
            low, high = wilson(float(p), n)
            sd = ((spread or {}).get(name) or {}).get("sd", 0.0)
            if runs > 1 and sd > 0:
                seed = Z95 * sd / math.sqrt(runs)
                low = max(0.0, p - math.hypot(p - low, seed))
                high = min(1.0, p + math.hypot(high - p, seed))
            out[name] = {"low": low, "high": high, "examples": n}
    return out


def _mark_ties(points: list[dict[str, Any]], names: list[str]) -> None:
    """``tied_with_best`` on each point: its first share objective cannot be told apart at 95%
    from the best point's (the difference is within the two intervals' half-widths, added in
    quadrature); left None without a share objective or intervals."""
    share = next((n for n in names if n in PROPORTIONS), None)
    scored = [
        p for p in points if share and share in (p.get("intervals") or {}) and p.get("values")
    ]
    if not scored:
        return
    best = max(scored, key=lambda p: p["values"][share])
    b, bi = best["values"][share], best["intervals"][share]
    for p in scored:
        v, iv = p["values"][share], p["intervals"][share]
        # one-sided half-widths facing each other: the best's lower one, this point's upper one
        room = math.hypot(b - bi["low"], iv["high"] - v)
        p["tied_with_best"] = (b - v) <= room


def root_of(t: Trial) -> int:
    """The trial a run belongs to: a replicate's parent, else the trial itself."""
    return t.parent_id if t.kind == "replicate" and t.parent_id is not None else t.id


def _mean_of(dicts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Per key, the mean of the finite numbers every one of ``dicts`` has (None if one is None)."""
    if not dicts or any(d is None for d in dicts):
        return None
    out = {}
    for key in dicts[0]:
        xs = [d.get(key) for d in dicts]
        if all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs):
            out[key] = sum(xs) / len(xs)
    return out


@dataclass
class Runs:
    """A candidate's complete runs: ``root`` (the trial the search or a baseline ran) first, then
    its replicates."""

    root: Trial
    runs: list[Trial]

    @property
    def values(self) -> dict[str, Any]:
        return self.root.values if len(self.runs) == 1 else _mean_of([t.values for t in self.runs])

    @property
    def test_values(self) -> dict[str, Any] | None:
        if len(self.runs) == 1:
            return self.root.test_values
        return _mean_of([t.test_values for t in self.runs])

    def spread(self, names: list[str], test: bool = False) -> dict[str, dict[str, float]]:
        """Mean and sd over the runs of each share objective in ``names`` (on test: its test
        counterpart)."""
        out = {}
        for name in names:
            if name not in PROPORTIONS:
                continue
            key = test_name(name) if test else name
            xs = [(t.test_values if test else t.values or {}) or {} for t in self.runs]
            xs = [d.get(key) for d in xs]
            if all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs):
                mean = sum(xs) / len(xs)
                sd = (
                    math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
                    if len(xs) > 1
                    else 0.0
                )
                out[name] = {"mean": mean, "sd": sd}
        return out


def _complete(
    session: Session, study: Study, infeasible: list[Trial] | None = None
) -> tuple[list[Runs], Any]:
    """Candidates with complete feasible runs and finite values for every objective (their runs
    grouped, :class:`Runs`), and their (mean) values in minimisation form; complete trials that
    violate a constraint go to ``infeasible`` if given."""
    import numpy as np

    from autopeft.optim import pareto as pm

    objectives = objectives_of(study.spec)
    names, directions = [n for n, _ in objectives], [d for _, d in objectives]
    constraints = constraints_of(study.spec)
    trials = session.scalars(
        select(Trial)
        .where(Trial.study_id == study.id, Trial.state == "complete")
        .order_by(Trial.number)
    ).all()
    groups: dict[int, list[Trial]] = {}
    for t in trials:
        if not trial_feasible(t, constraints):
            if infeasible is not None:
                infeasible.append(t)
            continue
        vals = t.values or {}
        if all(isinstance(vals.get(n), (int, float)) and math.isfinite(vals[n]) for n in names):
            groups.setdefault(root_of(t), []).append(t)
    kept, rows = [], []
    for root_id, runs in groups.items():
        root = next((t for t in runs if t.id == root_id), None)
        if root is None:  # replicates of a trial that is not complete: not a point of its own
            continue
        group = Runs(root, [root, *(t for t in runs if t is not root)])
        kept.append(group)
        rows.append([group.values[n] for n in names])
    Y = pm.to_minimization(np.asarray(rows, float).reshape(len(rows), len(names)), directions)
    return kept, Y


def front_runs(
    session: Session, study: Study, infeasible: list[Trial] | None = None
) -> tuple[list[Runs], list[Runs]]:
    """(the validation front, every candidate with complete feasible runs), selected on the runs'
    means; baselines included; infeasible complete trials are appended to ``infeasible``."""
    from autopeft.optim import pareto as pm

    groups, Y = _complete(session, study, infeasible)
    mask = pm.is_non_dominated(Y) if len(groups) else []
    return [g for g, keep in zip(groups, mask) if keep], groups


def front_trials(
    session: Session, study: Study, infeasible: list[Trial] | None = None
) -> tuple[list[Trial], list[Trial]]:
    """:func:`front_runs` as the candidates' own trials (the runs the search or a baseline made)."""
    front, groups = front_runs(session, study, infeasible)
    return [g.root for g in front], [g.root for g in groups]
