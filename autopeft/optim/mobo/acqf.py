"""The acquisition of ``mobo``: qLogNEHVI on the GP outputs, with known objectives computed
exactly from the candidates.

Shapes: candidates ``X (b, q, d)``; GP outputs (maximisation form) are the modelled objectives,
then the modelled constraints (``g <= 0`` is satisfied); the MC objective has one column per
objective, in the study's objective order.
"""

from __future__ import annotations

import warnings


class KnownObjectives:
    """The known objectives of encodings, exactly: ``X (..., d)`` -> ``(..., k)`` in
    maximisation form (each value times its ``sign``). Values are cached by encoding, for the
    lifetime of this object (one suggestion); :meth:`prime` enters configs whose encodings are
    about to be scored, so they are not decoded again."""

    def __init__(self, space, fns, signs):
        self.space, self.fns, self.signs = space, list(fns), list(signs)
        self.cache: dict[bytes, list[float]] = {}

    def _values(self, config) -> list[float]:
        return [s * float(fn(config)) for fn, s in zip(self.fns, self.signs)]

    def prime(self, enc, configs) -> None:
        """Cache the values of ``configs`` under their encodings ``enc (n, d)``."""
        for row, config in zip(enc, configs):
            key = row.tobytes()
            if key not in self.cache:
                self.cache[key] = self._values(config)

    def __call__(self, X):
        import torch

        flat = X.detach().reshape(-1, X.shape[-1]).cpu().numpy()
        rows = []
        for x in flat:
            key = x.tobytes()
            if key not in self.cache:
                self.cache[key] = self._values(self.space.decode(x))
            rows.append(self.cache[key])
        return torch.tensor(rows, dtype=X.dtype).reshape(*X.shape[:-1], len(self.fns))


def mc_objective(objective_names, modelled, known_names, known: KnownObjectives | None):
    """The MC objective: the GP's samples of the ``modelled`` objectives (its first outputs)
    and ``known``'s exact values of ``known_names``, stacked in ``objective_names`` order."""
    from botorch.acquisition.multi_objective.objective import (
        GenericMCMultiOutputObjective,
        IdentityMCMultiOutputObjective,
    )

    if known is None:
        return IdentityMCMultiOutputObjective(outcomes=list(range(len(modelled))))
    import torch

    order = [
        ("gp", modelled.index(k)) if k in modelled else ("known", known_names.index(k))
        for k in objective_names
    ]

    def combine(samples, X=None):
        # samples: (mc, b, [mcmc models,] q, outputs); exact: (b, q, k)
        exact = known(X)
        if samples.dim() == exact.dim() + 2:  # fully Bayesian (SAAS): one dim per MCMC sample
            exact = exact.unsqueeze(-3)
        exact = exact.expand(*samples.shape[:-1], len(known_names))
        cols = [samples[..., j] if src == "gp" else exact[..., j] for src, j in order]
        return torch.stack(cols, dim=-1)

    return GenericMCMultiOutputObjective(combine)


def constraint_outputs(first: int, count: int) -> list:
    """Outcome constraints for qLogNEHVI: GP outputs ``first, ..., first + count - 1`` are
    ``g`` with ``g <= 0`` satisfied."""
    return [(lambda Z, j=first + c: Z[..., j]) for c in range(count)]


def log_nehvi(model, ref_point, X_baseline, objective, constraints, X_pending, mc_samples, seed):
    """``qLogNoisyExpectedHypervolumeImprovement`` with ``ref_point`` (maximisation form),
    baseline ``X_baseline (n, d)``, pending ``X_pending (p, d)`` or ``None``, and a Sobol QMC
    sampler of ``mc_samples`` draws seeded by ``seed``; the baseline is used as given."""
    import torch
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.sampling import SobolQMCNormalSampler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=ref_point,
            X_baseline=X_baseline,
            objective=objective,
            constraints=constraints or None,
            X_pending=X_pending,
            prune_baseline=False,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([mc_samples]), seed=seed),
        )
