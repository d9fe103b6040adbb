"""Population-based training: ``pbt`` (one metric) and ``mopbt`` (multi-objective).

The population is the set of running trials that have reported. ``ask`` fills it with random
configs (``population_size`` is a hint for the controller: how many to run at once). Each
trial reports ``(step, values)``; once every ``perturbation_interval`` steps of a trial, it is
ranked against the latest reports of the population:

* ``pbt``: by one score — an objective (``metric``, default the first) or, with ``weights``,
  a weighted sum of the objectives in minimisation form, each min-max normalised over the
  population (scalarised PBT).
* ``mopbt`` (Dushatskiy et al. 2023): by non-dominated sorting, ties within a front broken by
  crowding distance (``tie_break="crowding"``) or hypervolume contribution (``"hv"``).

A trial in the bottom ``quantile_fraction`` (25%) *exploits*: it copies the config (and, in
the worker, the latest checkpoint) of a trial drawn from the top quantile (``pbt``) or from
the first non-dominated front (``mopbt``), then *explores*: every mutable knob is resampled
with probability ``resample_probability`` (0.25), else multiplied by 0.8 or 1.2 (numbers,
clipped to the bounds) or moved to a neighbouring choice. No member exploits at or after
``max_step`` (its last report: the service sets it from the workload). Only knobs in ``mutable`` change —
by default those of ``lr, learning_rate, weight_decay, dropout, lora.dropout, warmup_ratio``
present in the space: architecture cannot change mid-training. ``report`` answers with an
:class:`~autopeft.optim.base.Exploit`; every exploit is appended to :attr:`lineage`, and
:meth:`lineage_log` prints it.

Randomness for a decision is seeded by ``(seed, trial id, step)``: replaying the reports in
order rebuilds the same state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autopeft.errors import InvalidConfig
from autopeft.optim import pareto as _pareto
from autopeft.optim.base import BaseOptimizer, Exploit, Population

DEFAULT_MUTABLE = ("lr", "learning_rate", "weight_decay", "dropout", "lora.dropout", "warmup_ratio")


def quantiles(order: list[int], fraction: float) -> tuple[list[int], list[int]]:
    """``(top, bottom)`` of ``order`` (best first): ``max(1, floor(n * fraction))`` each, never
    overlapping; both empty for fewer than 2 members."""
    n = len(order)
    if n < 2:
        return [], []
    k = min(max(1, int(math.floor(n * fraction))), n // 2)
    return list(order[:k]), list(order[n - k :])


def explore(
    config: dict,
    space,
    mutable: list[str],
    rng: np.random.Generator,
    resample_probability: float = 0.25,
    factors: tuple[float, float] = (0.8, 1.2),
) -> tuple[dict, dict]:
    """A perturbed copy of ``config`` and ``{name: (old, new, how)}`` for what changed.

    For each active mutable parameter: with ``resample_probability`` draw a fresh value from
    the space (``how="resample"``); else scale a number by a random factor of ``factors``,
    clipped to its bounds (``"x0.8"``), or step an ordinal / categorical to a neighbouring
    choice (``"next"`` / ``"previous"``)."""
    new = dict(config)
    changes: dict[str, tuple[Any, Any, str]] = {}
    for name in mutable:
        if name not in config:
            continue
        p = space[name]
        old = config[name]
        if rng.random() < resample_probability:
            value, how = p.sample(rng), "resample"
        elif p.kind in ("float", "int"):
            factor = factors[int(rng.integers(len(factors)))]
            value = min(max(old * factor, p.low), p.high)
            if p.kind == "int":
                value = int(round(value))
            else:
                value = float(value)
            how = f"x{factor:g}"
        else:
            i = p.index(old)
            step = int(rng.choice([-1, 1]))
            if not 0 <= i + step < len(p.choices):
                step = -step
            j = min(max(i + step, 0), len(p.choices) - 1)
            value, how = p.choices[j], ("next" if j > i else "previous" if j < i else "same")
        new[name] = value
        if value != old:
            changes[name] = (old, value, how)
    return space.validate(new), changes


# options of every population-based optimiser
_POPULATION_OPTIONS = {
    "population_size": 8,
    "perturbation_interval": 4,
    "quantile_fraction": 0.25,
    "resample_probability": 0.25,
    "mutable": None,
}


class PBTOptimizer(BaseOptimizer):
    name = "pbt"
    REBUILDS_BY_ADD = False  # an exploit changes a member's config after its ask
    OPTIONS = {
        **_POPULATION_OPTIONS,
        "metric": None,
        "weights": None,
        "max_step": None,
    }

    def __init__(self, space, objectives, seed=0, **options):
        super().__init__(space, objectives, seed, **options)
        o = self.options
        if not isinstance(o["population_size"], int) or o["population_size"] < 2:
            raise InvalidConfig(
                f"must be an integer >= 2, got {o['population_size']!r}", "population_size"
            )
        if not isinstance(o["perturbation_interval"], int) or o["perturbation_interval"] < 1:
            raise InvalidConfig(
                f"must be an integer >= 1, got {o['perturbation_interval']!r}",
                "perturbation_interval",
            )
        if not 0 < o["quantile_fraction"] <= 0.5:
            raise InvalidConfig(
                f"must be in (0, 0.5], got {o['quantile_fraction']!r}", "quantile_fraction"
            )
        if o["max_step"] is not None and (not isinstance(o["max_step"], int) or o["max_step"] < 1):
            raise InvalidConfig(f"must be an integer >= 1, got {o['max_step']!r}", "max_step")
        if not 0 <= o["resample_probability"] <= 1:
            raise InvalidConfig(
                f"must be in [0, 1], got {o['resample_probability']!r}", "resample_probability"
            )
        if o["mutable"] is None:
            self.mutable = [p.name for p in space.params if p.name in DEFAULT_MUTABLE]
        else:
            unknown = [m for m in o["mutable"] if m not in [p.name for p in space.params]]
            if unknown:
                raise InvalidConfig(
                    f"mutable parameter {unknown[0]!r} is not a searched parameter of the space",
                    "mutable",
                )
            self.mutable = list(o["mutable"])
        self._check_scoring()
        self._last_perturb: dict[int, int] = {}
        self._lineage: list[dict] = []

    def _check_scoring(self):
        o = self.options
        if o["weights"] is not None and len(o["weights"]) != len(self.objectives):
            raise InvalidConfig(
                f"needs one weight per objective ({len(self.objectives)})", "weights"
            )
        metric = o["metric"]
        if metric is not None and metric not in self.objective_names:
            raise InvalidConfig(f"metric {metric!r} is not an objective", "metric")

    # ------------------------------------------------------------------ ask
    def _suggest(self, n, first_number):
        return [(self._random_config(first_number + j), None, None) for j in range(n)]

    # ------------------------------------------------------------------ ranking
    def _order(self, Y: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Population order (best first) and the allowed exploit sources; ``Y`` minimisation."""
        o = self.options
        if o["weights"] is not None:
            lo, hi = Y.min(axis=0), Y.max(axis=0)
            Z = (Y - lo) / np.where(hi > lo, hi - lo, 1.0)
            score = Z @ np.abs(np.asarray(o["weights"], float))
        else:
            j = self.objective_names.index(o["metric"]) if o["metric"] else 0
            score = Y[:, j]
        order = np.argsort(score, kind="stable")
        top, _ = quantiles(order.tolist(), o["quantile_fraction"])
        return order, top

    def _on_report(self, record, step, values):
        interval = self.options["perturbation_interval"]
        if step - self._last_perturb.get(record.id, 0) < interval:
            return "continue"
        if self.options["max_step"] is not None and step >= self.options["max_step"]:
            return "continue"  # a member's last report: it is done, nothing left to continue
        self._last_perturb[record.id] = step
        last = self.options["max_step"]
        # a member at its last report is done: copying it would only clone it
        members = [
            r
            for r in self._records_in("running")
            if r.reports
            and (r is record or last is None or max(r.reports) < last)
            and self._objective_vector(r.reports[max(r.reports)]) is not None
        ]
        if record not in members or len(members) < 2:
            return "continue"
        Y = np.stack([self._objective_vector(r.reports[max(r.reports)]) for r in members])
        order, sources = self._order(Y)
        _, bottom = quantiles(order.tolist(), self.options["quantile_fraction"])
        me = members.index(record)
        sources = [i for i in sources if i not in bottom and i != me]
        if me not in bottom or not sources:
            return "continue"
        rng = self.rng(record.id, step, "exploit")
        source = members[int(rng.choice(sources))]
        config, changes = explore(
            source.config, self.space, self.mutable, rng, self.options["resample_probability"]
        )
        self._lineage.append(
            {
                "step": step,
                "trial": record.id,
                "source": source.id,
                "source_step": max(source.reports),
                "old_config": dict(record.config),
                "values": dict(record.reports[step]),
                "source_values": dict(source.reports[max(source.reports)]),
                "changes": changes,
            }
        )
        record.config = config
        record.parent_id = source.id
        return Exploit(
            source.id, dict(config), step, {k: (a, b) for k, (a, b, _) in changes.items()}
        )

    @property
    def population(self) -> Population:
        o = self.options
        return Population(o["population_size"], o["perturbation_interval"], o["max_step"])

    # ------------------------------------------------------------------ lineage
    @property
    def lineage(self) -> list[dict]:
        """Every exploit in order: ``step``, ``trial``, ``source``, ``source_step``, the values
        of both, the trial's old config and ``changes`` ``{name: (old, new, how)}`` (copies)."""
        return [dict(e, changes=dict(e["changes"])) for e in self._lineage]

    def lineage_log(self) -> str:
        """One readable line per exploit."""
        lines = []
        for e in self._lineage:
            vals = ", ".join(
                f"{k}={e['values'].get(k, float('nan')):.4g}" for k in self.objective_names
            )
            src = ", ".join(
                f"{k}={e['source_values'].get(k, float('nan')):.4g}" for k in self.objective_names
            )
            changes = "; ".join(
                f"{k}: {_fmt(a)} -> {_fmt(b)} ({how})" for k, (a, b, how) in e["changes"].items()
            )
            lines.append(
                f"step {e['step']}: trial {e['trial']} ({vals}) cloned trial {e['source']} "
                f"at step {e['source_step']} ({src}); {changes or 'no change'}"
            )
        return "\n".join(lines)


class MOPBTOptimizer(PBTOptimizer):
    name = "mopbt"
    OPTIONS = {
        **_POPULATION_OPTIONS,
        "tie_break": "crowding",
        "max_step": None,
    }

    def _check_scoring(self):
        if self.options["tie_break"] not in ("crowding", "hv"):
            raise InvalidConfig(
                f"must be 'crowding' or 'hv', got {self.options['tie_break']!r}", "tie_break"
            )

    def _order(self, Y):
        ref = (
            _pareto.reference_point(Y, self.reference_point_min)
            if self.options["tie_break"] == "hv"
            else None
        )
        order = _pareto.rank_order(Y, self.options["tie_break"], ref)
        first_front = _pareto.non_dominated_sort(Y)[0].tolist()
        return order, first_front


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else repr(v)
