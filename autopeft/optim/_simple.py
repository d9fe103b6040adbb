"""Model-free optimisers: uniform ``random`` search and scrambled ``sobol`` sequences."""

from __future__ import annotations

import warnings

from autopeft.optim.base import BaseOptimizer


class RandomOptimizer(BaseOptimizer):
    """Uniform random configs (log-uniform for log parameters); trial ``i`` uses a generator
    seeded by ``(seed, i)``, so suggestions depend on nothing but the trial number."""

    name = "random"
    REBUILDS_BY_ADD = True

    def _suggest(self, n, first_number):
        return [(self._random_config(first_number + j), None, None) for j in range(n)]


class SobolOptimizer(BaseOptimizer):
    """Trial ``i`` decodes point ``i`` of a scrambled Sobol sequence over the unit-cube encoding
    (``space.encode``) — a space-filling design. Conditional parameters decode from their
    coordinates only when active."""

    name = "sobol"
    REBUILDS_BY_ADD = True

    def _suggest(self, n, first_number):
        from scipy.stats import qmc

        engine = qmc.Sobol(d=max(1, self.space.dim), scramble=True, seed=self.seed)
        if first_number:
            engine.fast_forward(first_number)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # balance properties need powers of two; irrelevant here
            X = engine.random(n)
        return [(self.space.decode(x[: self.space.dim]), None, None) for x in X]
