"""The answers of the front endpoints: a study's Pareto front and hypervolume on a split, and the
fronts of several studies compared (computed by :mod:`autopeft.api.services.front`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft.api.errors import ApiError
from autopeft.api.models import Trial
from autopeft.api.services.front import (
    SPLITS,
    _complete,
    _mark_ties,
    front_runs,
    hidden_on_test,
    intervals,
    on_test,
    test_name,
)
from autopeft.api.services.studies import get_study, trial_public
from autopeft.api.study import objectives_of


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ApiError(
            422,
            "invalid_request",
            f"split must be one of {', '.join(SPLITS)}, got {split!r}",
            "split",
        )


def pareto(
    session: Session, user_id: int, study_id: int, split: str = "validation"
) -> dict[str, Any]:
    """The front selected on validation; with ``split="test"`` each trial's values are its held-out
    test metrics (selection never looks at test). Each point carries the 95% interval of its
    share objectives on that split (:func:`intervals`): on a few hundred examples, points a few
    hundredths apart are often not told apart, and a user should see that."""
    _check_split(split)
    study = get_study(session, user_id, study_id)
    infeasible: list[Trial] = []
    front, _ = front_runs(session, study, infeasible)
    out = []
    names = [n for n, _ in objectives_of(study.spec)]
    for g in front:
        test = split == "test"
        if test and hidden_on_test(g):
            continue  # an attached result without the user's test values (services.outside)
        public = trial_public(g.root)
        if test:
            public["values"] = on_test(g, names)
            examples = (g.test_values or {}).get(test_name("examples"))
        else:
            public["values"] = g.values
            examples = (g.values or {}).get("eval_examples")
        spread = g.spread(names, test)
        public["intervals"] = intervals(public["values"], examples, names, spread, len(g.runs))
        if len(g.runs) > 1:
            public["seeds"] = {
                "runs": len(g.runs),
                "trial_ids": [t.id for t in g.runs],
                "spread": spread,
            }
        out.append(public)
    _mark_ties(out, names)
    return {
        "objectives": study.spec["objectives"],
        "split": split,
        "trials": out,
        "n_infeasible": len(infeasible),
    }


REFERENCE_RULE = (
    "the study's reference_point if given, else per objective the worst observed value among "
    "complete trials plus 10% of the observed range (autopeft.optim.pareto.reference_point); "
    "the reference point is reported in the objectives' own sign; split=test: the validation "
    "front's trials at their test values, with the validation reference point; trials that "
    "violate a constraint count nowhere (n_infeasible)"
)


def hypervolume(
    session: Session, user_id: int, study_id: int, split: str = "validation"
) -> dict[str, Any]:
    import numpy as np

    from autopeft.optim import pareto as pm

    _check_split(split)
    study = get_study(session, user_id, study_id)
    objectives = objectives_of(study.spec)
    names, directions = [n for n, _ in objectives], [d for _, d in objectives]
    infeasible: list[Trial] = []
    trials, Y = _complete(session, study, infeasible)  # candidates (runs grouped, means)
    given = study.spec.get("reference_point")
    if not len(trials):
        return {
            "split": split,
            "hypervolume": 0.0,
            "reference_point": given,
            "reference_rule": REFERENCE_RULE,
            "n_complete": 0,
            "n_pareto": 0,
            "n_infeasible": len(infeasible),
        }
    given_min = (
        pm.to_minimization(np.asarray([[given[n] for n in names]], float), directions)[0]
        if given
        else None
    )
    ref = pm.reference_point(Y, given_min)
    front = pm.is_non_dominated(Y)
    if split == "test":
        rows = [on_test(t, names) for t, keep in zip(trials, front) if keep]
        rows = [
            [v[n] for n in names]
            for v in rows
            if v and all(isinstance(v.get(n), (int, float)) for n in names)
        ]
        Y = pm.to_minimization(np.asarray(rows, float).reshape(len(rows), len(names)), directions)
    hv = pm.hypervolume(Y, ref) if len(Y) else 0.0
    ref_user = pm.to_minimization(ref.reshape(1, -1), directions)[0]  # negation is its own inverse
    return {
        "split": split,
        "hypervolume": float(hv),
        "reference_point": {n: float(r) for n, r in zip(names, ref_user)},
        "reference_rule": REFERENCE_RULE,
        "n_complete": len(trials),
        "n_pareto": int(front.sum()),
        "n_infeasible": len(infeasible),
    }


COMPARE_MAX = 10


def compare(session: Session, user_id: int, ids: list[int]) -> dict[str, Any]:
    """Several studies of the user with the same objectives side by side: each one's validation
    front (baselines included) and its hypervolume after each completed trial against the compute
    used so far (training epochs of every trial that had ended by then, pruned and failed ones
    included), all against one reference point: the first study's ``reference_point`` when every
    study gives the same one, else the worst value over all the studies' trials plus 10% of the
    range. Different objectives are a 422 naming ``ids``."""
    import numpy as np

    from autopeft.optim import pareto as pm

    if not 1 <= len(ids) <= COMPARE_MAX or len(set(ids)) != len(ids):
        raise ApiError(
            422,
            "invalid_request",
            f"give 1 to {COMPARE_MAX} distinct study ids, got {ids}",
            "ids",
        )
    studies = [get_study(session, user_id, i) for i in ids]
    objectives = objectives_of(studies[0].spec)
    for s in studies[1:]:
        if objectives_of(s.spec) != objectives:
            raise ApiError(
                422,
                "invalid_request",
                f"study {s.id} has other objectives than study {studies[0].id} "
                f"({objectives_of(s.spec)} vs {objectives}): fronts cannot be compared",
                "ids",
            )
    names, directions = [n for n, _ in objectives], [d for _, d in objectives]
    complete = [_complete(session, s) for s in studies]
    given = [s.spec.get("reference_point") for s in studies]
    rows = [Y for _, Y in complete if len(Y)]
    if given[0] and all(g == given[0] for g in given):
        ref = pm.to_minimization(np.asarray([[given[0][n] for n in names]], float), directions)[0]
    elif rows:
        ref = pm.reference_point(np.vstack(rows))
    else:
        ref = None
    out = []
    for study, (trials, Y) in zip(studies, complete):
        ended = session.scalars(
            select(Trial)
            .where(Trial.study_id == study.id, Trial.finished_at.is_not(None))
            .order_by(Trial.finished_at, Trial.number)
        ).all()
        index = {run.id: i for i, g in enumerate(trials) for run in g.runs}
        history, seen, compute = [], [], 0.0
        for t in ended:
            compute += float(t.epochs_trained or 0.0)
            if t.id in index and index[t.id] not in seen:
                seen.append(index[t.id])
                hv = pm.hypervolume(Y[seen], ref) if ref is not None else 0.0
                history.append({"n": len(seen), "compute": compute, "hypervolume": float(hv)})
        front = [
            g.root for g, keep in zip(trials, pm.is_non_dominated(Y) if len(trials) else []) if keep
        ]
        out.append(
            {
                "id": study.id,
                "name": study.name,
                "state": study.state,
                "front": [trial_public(t) for t in front],
                "history": history,
                "hypervolume": history[-1]["hypervolume"] if history else 0.0,
                "compute": compute,
            }
        )
    ref_user = (
        {n: float(r) for n, r in zip(names, pm.to_minimization(ref.reshape(1, -1), directions)[0])}
        if ref is not None
        else None
    )
    return {
        "objectives": studies[0].spec["objectives"],
        "reference_point": ref_user,
        "studies": out,
    }
