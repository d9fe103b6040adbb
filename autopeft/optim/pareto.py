"""Pareto maths: dominance, non-dominated sorting, crowding, hypervolume and its contributions,
and the reference-point rules.

Sign convention
---------------
Every function here works on an array ``Y`` of shape ``(n, m)`` (``n`` points, ``m``
objectives) in **minimisation** form: lower is better in every column. Convert user values
with :func:`to_minimization`, which multiplies each column by :func:`minimization_sign` of its
direction (negates the ``"maximize"`` columns). BoTorch uses the opposite, maximisation,
convention; :func:`hypervolume` converts when it delegates to it.

A point ``a`` *dominates* ``b`` when ``a <= b`` in every objective and ``a < b`` in at least
one. The *hypervolume* of a set w.r.t. a reference point ``r`` (also in minimisation form) is
the Lebesgue measure of ``{z : some y in Y has y <= z <= r}``; points that are not strictly
better than ``r`` in every objective contribute nothing.

Reference points (all ``(m,)``, minimisation form)
---------------------------------------------------
* :func:`reference_point` — for reporting: a user-given point wins; otherwise the worst
  observed value per objective plus 10% of the observed range, so every observed point,
  including the extremes of the front, contributes a positive volume.
* :func:`front_reference_point` — the nadir of the non-dominated points plus a margin of the
  front's range.
* :func:`expanding_reference_point` — the nadir of the non-dominated points plus 10% of the
  observed range.
* :func:`acquisition_reference_point` — the rules an acquisition function chooses from by
  name (``ACQUISITION_RULES``), alone or taken in turn (``RULE_TURNS``, lists of names).

Exact algorithms are used for ``m <= 3`` (2-D sweep, 3-D slicing into 2-D sweeps); for
``m >= 4`` BoTorch's :class:`~botorch.utils.multi_objective.hypervolume.Hypervolume` is used
(imported lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DIRECTIONS = ("minimize", "maximize")


def to_minimization(
    values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]
) -> np.ndarray:
    """``(n, m)`` values as given by the user → minimisation form (``maximize`` columns negated)."""
    Y = np.asarray(values, dtype=float)
    if Y.ndim == 1:
        Y = Y.reshape(1, -1) if len(directions) > 1 or Y.size == 1 else Y.reshape(-1, 1)
    if Y.shape[1] != len(directions):
        raise ValueError(
            f"values have {Y.shape[1]} columns but {len(directions)} directions were given"
        )
    signs = np.array([minimization_sign(d) for d in directions])
    return Y * signs


def minimization_sign(direction: str) -> float:
    """``1.0`` for ``"minimize"``, ``-1.0`` for ``"maximize"``: a user value times this sign is
    in minimisation form (times its negation, in maximisation form)."""
    if direction == "minimize":
        return 1.0
    if direction == "maximize":
        return -1.0
    raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` dominates ``b`` (minimisation): no worse everywhere and better somewhere."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.all(a <= b) and np.any(a < b))


def is_non_dominated(Y: np.ndarray, *, deduplicate: bool = False) -> np.ndarray:
    """Boolean mask ``(n,)`` of the points of ``Y (n, m)`` that no other point dominates.

    Duplicated points are all kept unless ``deduplicate`` (then only the first of each)."""
    Y = np.asarray(Y, float)
    n = Y.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    le = np.all(Y[:, None, :] <= Y[None, :, :], axis=2)  # le[i, j]: i <= j everywhere
    lt = np.any(Y[:, None, :] < Y[None, :, :], axis=2)
    dominated = np.any(le & lt, axis=0)  # j is dominated by some i
    mask = ~dominated
    if deduplicate:
        seen: set[tuple] = set()
        for i in np.flatnonzero(mask):
            key = tuple(Y[i])
            if key in seen:
                mask[i] = False
            seen.add(key)
    return mask


def non_dominated_sort(Y: np.ndarray) -> list[np.ndarray]:
    """Fronts of ``Y (n, m)`` (minimisation): a list of index arrays, best front first.

    Front 0 is the non-dominated set; front k is non-dominated once fronts < k are removed.
    Equal points share a front."""
    Y = np.asarray(Y, float)
    n = Y.shape[0]
    if n == 0:
        return []
    le = np.all(Y[:, None, :] <= Y[None, :, :], axis=2)
    lt = np.any(Y[:, None, :] < Y[None, :, :], axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    count = dom.sum(axis=0)  # how many dominate j
    fronts = []
    remaining = np.ones(n, dtype=bool)
    current = np.flatnonzero(count == 0)
    while current.size:
        fronts.append(current)
        remaining[current] = False
        count = count - dom[current].sum(axis=0)
        current = np.flatnonzero(remaining & (count == 0))
    return fronts


def pareto_ranks(Y: np.ndarray) -> np.ndarray:
    """Front index of every point ``(n,)``: 0 for the non-dominated set."""
    ranks = np.zeros(np.asarray(Y).shape[0], dtype=int)
    for k, front in enumerate(non_dominated_sort(Y)):
        ranks[front] = k
    return ranks


def crowding_distance(Y: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of the points of one front ``Y (n, m)``; ``(n,)``.

    Boundary points of each objective get ``inf``; the others the sum over objectives of the
    normalised gap between their two neighbours. Larger = less crowded (preferred)."""
    Y = np.asarray(Y, float)
    n, m = Y.shape
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for k in range(m):
        order = np.argsort(Y[:, k], kind="stable")
        span = Y[order[-1], k] - Y[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span <= 0:
            continue
        dist[order[1:-1]] += (Y[order[2:], k] - Y[order[:-2], k]) / span
    return dist


def rank_order(
    Y: np.ndarray, tie_break: str = "crowding", ref_point: np.ndarray | None = None
) -> np.ndarray:
    """Indices of ``Y (n, m)`` from best to worst: by front, then within a front by larger
    crowding distance (``tie_break="crowding"``) or larger hypervolume contribution
    (``"hv"``, w.r.t. ``ref_point`` or the rule of :func:`reference_point`). Ties keep index order."""
    Y = np.asarray(Y, float)
    if tie_break not in ("crowding", "hv"):
        raise ValueError(f"tie_break must be 'crowding' or 'hv', got {tie_break!r}")
    if tie_break == "hv" and ref_point is None and len(Y):
        ref_point = reference_point(Y)
    order: list[int] = []
    for front in non_dominated_sort(Y):
        if tie_break == "crowding":
            score = crowding_distance(Y[front])
        else:
            score = hypervolume_contributions(Y[front], ref_point)
        order.extend(front[np.argsort(-score, kind="stable")].tolist())
    return np.asarray(order, dtype=int)


def reference_point(
    Y: np.ndarray, given: Sequence[float] | None = None, margin: float = 0.1
) -> np.ndarray:
    """The reference point (minimisation form) for ``Y (n, m)``.

    ``given`` (already in minimisation form) is returned as is. Otherwise: the worst (largest)
    observed value per objective plus ``margin`` (10%) of the observed range; a zero range
    adds ``margin * max(|worst|, 1)``."""
    if given is not None:
        return np.asarray(given, dtype=float)
    Y = np.asarray(Y, float)
    if Y.size == 0:
        raise ValueError("no points to derive a reference point from; give one")
    worst, best = Y.max(axis=0), Y.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.maximum(np.abs(worst), 1.0))
    return worst + margin * span


def front_reference_point(Y: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """The nadir of the non-dominated points of ``Y (n, m)`` (their worst value per objective)
    plus ``margin`` of the front's range; a zero range adds ``margin * max(|nadir|, 1)``."""
    Y = np.asarray(Y, float)
    front = Y[is_non_dominated(Y)]
    return reference_point(front, margin=margin)


def expanding_reference_point(Y: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """The nadir of the non-dominated points of ``Y (n, m)`` plus ``margin`` of the *observed*
    range (of all of ``Y``); a zero range adds ``margin * max(|nadir|, 1)``."""
    Y = np.asarray(Y, float)
    span = Y.max(axis=0) - Y.min(axis=0)
    nadir = Y[is_non_dominated(Y)].max(axis=0)
    return nadir + margin * np.where(span > 0, span, np.maximum(np.abs(nadir), 1.0))


#: reference-point rules for an acquisition function, by name: ``Y (n, m)`` -> ``(m,)``
ACQUISITION_RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "expanding": expanding_reference_point,
    "far": lambda Y: front_reference_point(Y, margin=1.0),
    "front": front_reference_point,
    "observed": reference_point,
}
#: named sequences of rules, taken in turn
RULE_TURNS: dict[str, tuple[str, ...]] = {
    "cycle": ("expanding", "expanding", "far"),
    "alternate": ("expanding", "observed"),
}


def acquisition_reference_point(
    Y: np.ndarray, rule: str | Sequence[str], number: int
) -> np.ndarray:
    """The reference point of ``rule`` for ``Y (n, m)`` at turn ``number`` (a suggestion number).

    ``rule``: a name in ``ACQUISITION_RULES`` or ``RULE_TURNS``, or a list of such names. A list
    and a named sequence are each taken in turn: element ``number % len``."""
    return ACQUISITION_RULES[acquisition_rule_at(rule, number)](Y)


def acquisition_rule_at(rule: str | Sequence[str], number: int) -> str:
    """The name in ``ACQUISITION_RULES`` that ``rule`` (as for
    :func:`acquisition_reference_point`) takes at turn ``number``."""
    if not isinstance(rule, str):
        rule = rule[number % len(rule)]
    if rule in RULE_TURNS:
        turns = RULE_TURNS[rule]
        rule = turns[number % len(turns)]
    return rule


def _hv2(P: np.ndarray, r: np.ndarray) -> float:
    """Exact 2-D hypervolume by a sweep over the first objective (points already < r)."""
    P = P[np.lexsort((P[:, 1], P[:, 0]))]
    volume, best_y = 0.0, r[1]
    for x, y in P:
        if y < best_y:
            volume += (r[0] - x) * (best_y - y)
            best_y = y
    return float(volume)


def _hv3(P: np.ndarray, r: np.ndarray) -> float:
    """Exact 3-D hypervolume by slicing along the third objective into 2-D sweeps."""
    P = P[np.argsort(P[:, 2], kind="stable")]
    volume = 0.0
    for i in range(len(P)):
        z_next = P[i + 1, 2] if i + 1 < len(P) else r[2]
        depth = z_next - P[i, 2]
        if depth > 0:
            volume += _hv2(P[: i + 1, :2], r[:2]) * depth
    return float(volume)


def hypervolume(Y: np.ndarray, ref_point: Sequence[float]) -> float:
    """Hypervolume dominated by ``Y (n, m)`` (minimisation) and bounded by ``ref_point (m,)``.

    Exact sweep for m = 2, slicing for m = 3, BoTorch's ``Hypervolume`` for m >= 4; m = 1 is
    the length ``r - min(Y)``."""
    Y = np.asarray(Y, float)
    r = np.asarray(ref_point, float)
    if Y.size == 0:
        return 0.0
    if Y.ndim != 2 or Y.shape[1] != r.shape[0]:
        raise ValueError(f"Y must be (n, {r.shape[0]}), got {Y.shape}")
    P = Y[np.all(r > Y, axis=1)]
    if len(P) == 0:
        return 0.0
    P = P[is_non_dominated(P, deduplicate=True)]
    m = r.shape[0]
    if m == 1:
        return float(r[0] - P[:, 0].min())
    if m == 2:
        return _hv2(P, r)
    if m == 3:
        return _hv3(P, r)
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    hv = Hypervolume(ref_point=-torch.as_tensor(r, dtype=torch.double))
    return float(hv.compute(-torch.as_tensor(P, dtype=torch.double)))


def hypervolume_contributions(Y: np.ndarray, ref_point: Sequence[float]) -> np.ndarray:
    """Exclusive hypervolume contribution of every point of ``Y (n, m)``: ``HV(Y) - HV(Y \\ {i})``.

    Dominated points and exact duplicates contribute 0 (removing one copy loses nothing)."""
    Y = np.asarray(Y, float)
    total = hypervolume(Y, ref_point)
    out = np.zeros(len(Y))
    for i in np.flatnonzero(is_non_dominated(Y)):
        out[i] = total - hypervolume(np.delete(Y, i, axis=0), ref_point)
    return np.maximum(out, 0.0)
