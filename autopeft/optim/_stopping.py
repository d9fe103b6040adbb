"""Multi-fidelity early stopping on intermediate reports: ASHA and multi-objective ASHA.

Rungs are at steps ``min_step * reduction_factor ** k`` (below ``max_step`` when given). When
a trial first reports at or past a rung, its values there are recorded and compared with every
trial recorded at that rung so far (asynchronous successive halving: no waiting for a full
rung). With ``n`` recorded values it continues when it is among the best
``max(1, n // reduction_factor)``; with fewer than ``reduction_factor`` values it continues.

* ``asha``: one metric — the first objective (or ``metric``, an objective index).
* ``moasha``: all objectives; the rung is ordered by non-dominated sorting, ties within a front
  broken by crowding distance (Syne Tune's MOASHA uses the same idea). With ``keep_front``
  (the default) a trial on the rung's first non-dominated front always continues, even beyond
  the top ``1 / reduction_factor``: with an exactly known cost among the objectives, the cheap
  configs are what a front (and its hypervolume) needs, and ranking by crowding alone pruned
  them (measured: BENCHMARKS.md, "Real-task search").

With ``brackets`` > 1 (asynchronous Hyperband, as Ray Tune's ``AsyncHyperBandScheduler`` and
Syne Tune's Hyperband with shared rungs), trial ``i`` belongs to bracket ``i % brackets``, and
bracket ``s`` makes its first decision at the ``s``-th rung (``min_step * reduction_factor **
s``): bracket 0 is the plain ladder, later brackets hedge against a first rung that ranks configs
badly (their trials are judged only on later, more reliable reports; a bracket whose first rung
is past ``max_step`` never stops a trial). The rungs are shared: every trial's values are recorded
at every rung it passes, so each decision compares against all the trials seen at that rung.

With ``promotions`` (ASHA's promotion variant, as Syne Tune's ``type="promotion"``), a trial that
is not among the best at a rung is *paused* instead of stopped (decision ``"pause"``): it keeps its
checkpoint, and :meth:`SuccessiveHalving.promotion` names it again once later trials at that rung
make it one of the best (the highest rung first), for the controller to resume it from the rung's
checkpoint (:meth:`resume`) before it starts a new trial. A trial the budget never promotes ends
as pruned, as a stopped one does.

Values are in minimisation form (see ``pareto.py``). The decision is a pure function of the
sequence of reports (and resumes), so replaying them rebuilds the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autopeft.errors import InvalidConfig
from autopeft.optim.pareto import rank_order

KINDS = ("asha", "moasha")
_KEYS = (
    "kind",
    "min_step",
    "reduction_factor",
    "max_step",
    "metric",
    "keep_front",
    "promotions",
    "brackets",
)
#: the most brackets a study may ask for (each later one judges its trials a rung later)
MAX_BRACKETS = 8


class SuccessiveHalving:
    def __init__(
        self,
        kind: str,
        directions: Sequence[str],
        min_step: int = 1,
        reduction_factor: int = 3,
        max_step: int | None = None,
        metric: int = 0,
        keep_front: bool = True,
        promotions: bool = False,
        brackets: int = 1,
    ):
        self.kind = kind
        self.brackets = brackets
        self.keep_front = keep_front
        self.promotions = promotions
        self._paused: dict[int, int] = {}  # trial -> the rung it waits at (promotions)
        self.m = len(directions)
        self.min_step = min_step
        self.reduction_factor = reduction_factor
        self.max_step = max_step
        self.metric = metric
        self._rungs: dict[int, dict[int, np.ndarray]] = {}

    def rungs_up_to(self, step: int) -> list[int]:
        out, r = [], self.min_step
        while r <= step and (self.max_step is None or r < self.max_step):
            out.append(r)
            r *= self.reduction_factor
        return out

    def decide(self, trial_id: int, step: int, y: np.ndarray) -> str:
        """``"continue"``, ``"stop"``, or (promotions) ``"pause"`` for a trial's report at ``step``."""
        self._paused.pop(trial_id, None)  # reporting again: it was resumed
        decision, at = "continue", None
        first = self.bracket(trial_id)  # the rungs below its bracket's first only record it
        for k, rung in enumerate(self.rungs_up_to(step)):
            recorded = self._rungs.setdefault(rung, {})
            if trial_id in recorded:
                continue
            recorded[trial_id] = np.asarray(y, float)
            if k >= first and not self._keeps(trial_id, recorded):
                decision, at = "stop", rung
        if decision == "stop" and self.promotions:
            self._paused[trial_id] = at
            return "pause"
        return decision

    def bracket(self, trial_id: int) -> int:
        """The bracket of ``trial_id``: the index of the first rung that may stop it."""
        return trial_id % self.brackets

    def promotion(self) -> int | None:
        """The paused trial to resume now: one that later trials at its rung made one of the best
        there (the highest rung first, then the earliest trial), or None."""
        for rung in sorted(set(self._paused.values()), reverse=True):
            recorded = self._rungs[rung]
            for trial_id in sorted(t for t, r in self._paused.items() if r == rung):
                if self._keeps(trial_id, recorded):
                    return trial_id
        return None

    def resume(self, trial_id: int) -> None:
        """The controller resumes ``trial_id`` (named by :meth:`promotion`) from its checkpoint."""
        self._paused.pop(trial_id, None)

    def forget(self, trial_id: int) -> None:
        """``trial_id`` ended (told): it is no longer waiting at a rung."""
        self._paused.pop(trial_id, None)

    @property
    def paused(self) -> tuple[int, ...]:
        return tuple(sorted(self._paused))

    def _keeps(self, trial_id: int, recorded: dict[int, np.ndarray]) -> bool:
        n = len(recorded)
        if n < self.reduction_factor:
            return True
        keep = max(1, n // self.reduction_factor)
        ids = list(recorded)
        Y = np.stack([recorded[i] for i in ids])
        if self.kind == "asha":
            mine = recorded[trial_id][self.metric]
            better = int(np.sum(Y[:, self.metric] < mine))
            return better < keep
        me = ids.index(trial_id)
        if self.keep_front and not any(
            np.all(Y[j] <= Y[me]) and np.any(Y[j] < Y[me]) for j in range(n)
        ):
            return True  # non-dominated at this rung
        order = rank_order(Y, "crowding")
        position = int(np.flatnonzero(order == me)[0])
        return position < keep

    def rung_table(self) -> dict[int, dict[int, list[float]]]:
        """Recorded values per rung (for inspection)."""
        return {r: {i: v.tolist() for i, v in rec.items()} for r, rec in self._rungs.items()}


def make_stopper(spec: Any, directions: Sequence[str]) -> SuccessiveHalving | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise InvalidConfig(
            "early_stopping must be a mapping such as {'kind': 'moasha'}", "early_stopping"
        )
    for key in spec:
        if key not in _KEYS:
            raise InvalidConfig(
                f"unknown key {key!r}; allowed: {', '.join(_KEYS)}", f"early_stopping.{key}"
            )
    kind = spec.get("kind")
    if kind not in KINDS:
        raise InvalidConfig(
            f"kind must be one of {', '.join(KINDS)}, got {kind!r}", "early_stopping.kind"
        )
    min_step = spec.get("min_step", 1)
    rf = spec.get("reduction_factor", 3)
    max_step = spec.get("max_step")
    metric = spec.get("metric", 0)
    if not isinstance(min_step, int) or isinstance(min_step, bool) or min_step < 1:
        raise InvalidConfig(f"must be an integer >= 1, got {min_step!r}", "early_stopping.min_step")
    if not isinstance(rf, int) or isinstance(rf, bool) or rf < 2:
        raise InvalidConfig(
            f"must be an integer >= 2, got {rf!r}", "early_stopping.reduction_factor"
        )
    if max_step is not None and (not isinstance(max_step, int) or max_step < min_step):
        raise InvalidConfig(
            f"must be an integer >= min_step, got {max_step!r}", "early_stopping.max_step"
        )
    if not isinstance(metric, int) or not (0 <= metric < len(directions)):
        raise InvalidConfig(
            f"must be an objective index below {len(directions)}, got {metric!r}",
            "early_stopping.metric",
        )
    keep_front = spec.get("keep_front", True)
    if not isinstance(keep_front, bool):
        raise InvalidConfig(
            f"must be true or false, got {keep_front!r}", "early_stopping.keep_front"
        )
    promotions = spec.get("promotions", False)
    if not isinstance(promotions, bool):
        raise InvalidConfig(
            f"must be true or false, got {promotions!r}", "early_stopping.promotions"
        )
    brackets = spec.get("brackets", 1)
    if (
        not isinstance(brackets, int)
        or isinstance(brackets, bool)
        or not 1 <= brackets <= MAX_BRACKETS
    ):
        raise InvalidConfig(
            f"must be an integer from 1 to {MAX_BRACKETS}, got {brackets!r}",
            "early_stopping.brackets",
        )
    return SuccessiveHalving(
        kind, directions, min_step, rf, max_step, metric, keep_front, promotions, brackets
    )
