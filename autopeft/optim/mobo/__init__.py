"""``mobo``: multi-objective Bayesian optimisation with BoTorch (GP surrogates + qLogNEHVI).

Modules: :mod:`.gp` (GP surrogates and their priors, SAAS), :mod:`.acqf` (the acquisition and
its MC objective with exactly known objectives), :mod:`.search_space` (the encoding and
one-parameter moves), :mod:`.optim_mixed` (maximising the acquisition over continuous and
mixed spaces) and :mod:`.optimizer` (:class:`MOBOOptimizer`, the ask/tell interface). The
reference-point rules live with the Pareto maths (:mod:`autopeft.optim.pareto`). Measurements
behind the defaults: ``docs/mobo.md``.
"""

from autopeft.optim.mobo.optimizer import MOBOOptimizer

__all__ = ["MOBOOptimizer"]
