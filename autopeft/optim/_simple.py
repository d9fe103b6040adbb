"""Model-free optimisers: uniform ``random`` search and scrambled ``sobol`` sequences."""

from __future__ import annotations

import warnings

from autopeft.optim.base import BaseOptimizer


def sobol_configs(space, seed: int, n: int, first_number: int) -> list[dict]:
    """Configs decoded from points ``first_number, ..., first_number + n - 1`` of the scrambled
    Sobol sequence (seeded by ``seed``) over the unit-cube encoding of ``space``
    (``space.encode``). Conditional parameters decode from their coordinates only when active."""
    from scipy.stats import qmc

    engine = qmc.Sobol(d=max(1, space.dim), scramble=True, seed=seed)
    if first_number:
        engine.fast_forward(first_number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balance properties need powers of two; irrelevant here
        X = engine.random(n)
    return [space.decode(x[: space.dim]) for x in X]


class RandomOptimizer(BaseOptimizer):
    """Uniform random configs (log-uniform for log parameters); trial ``i`` uses a generator
    seeded by ``(seed, i)``, so suggestions depend on nothing but the trial number."""

    name = "random"
    REBUILDS_BY_ADD = True

    def _suggest(self, n, first_number):
        return [(self._random_config(first_number + j), None, None) for j in range(n)]


class SobolOptimizer(BaseOptimizer):
    """Trial ``i`` decodes point ``i`` of a scrambled Sobol sequence (:func:`sobol_configs`) — a
    space-filling design."""

    name = "sobol"
    REBUILDS_BY_ADD = True

    def _suggest(self, n, first_number):
        return [(c, None, None) for c in sobol_configs(self.space, self.seed, n, first_number)]
