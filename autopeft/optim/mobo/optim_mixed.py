"""Maximising ``mobo``'s acquisition over the space.

Purely continuous spaces: multi-start L-BFGS-B over the unit cube (:func:`optimize_continuous`).
Otherwise: a pool of valid configs scored in one batch, the best few improved by local search
over one-parameter moves (:func:`optimize_discrete`), so candidates are always canonical
encodings of valid configs and conditional parameters are never half-active. An acquisition
takes ``X (b, 1, d)`` and returns ``(b,)``, higher is better.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from autopeft.optim.base import config_key
from autopeft.optim.mobo.acqf import KnownObjectives
from autopeft.optim.mobo.search_space import Codec, neighbours


def optimize_continuous(
    acqf,
    dim: int,
    front_X,
    rng: np.random.Generator,
    num_restarts: int,
    raw_samples: int,
    pareto_starts: int,
    region=None,
):
    """The best point ``(d,)`` (a tensor in ``[0, 1]^dim``) found by L-BFGS-B from BoTorch's
    raw-sample starts (``num_restarts`` of ``raw_samples``) plus up to ``pareto_starts`` rows
    of ``front_X (p, d)`` (current Pareto points) drawn by ``rng``.

    ``region``: ``(lo, hi, centre)`` of a :func:`trust_region`; the search then stays in that
    box and starts from raw samples in it plus the centre instead of the Pareto points."""
    import torch
    from botorch.optim import optimize_acqf
    from botorch.optim.initializers import gen_batch_initial_conditions

    if region is None:
        bounds = torch.stack(
            [torch.zeros(dim, dtype=torch.double), torch.ones(dim, dtype=torch.double)]
        )
    else:
        bounds = torch.stack([region[0], region[1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        starts = gen_batch_initial_conditions(
            acqf, bounds, q=1, num_restarts=num_restarts, raw_samples=raw_samples
        )
        if region is not None:
            starts = torch.cat([starts, region[2].view(1, 1, -1)])
        elif k := min(pareto_starts, len(front_X)):
            pick = torch.as_tensor(np.sort(rng.choice(len(front_X), size=k, replace=False)))
            starts = torch.cat([starts, front_X[pick].unsqueeze(1)])
        cand, _ = optimize_acqf(
            acqf,
            bounds=bounds,
            q=1,
            num_restarts=len(starts),
            batch_initial_conditions=starts,
            options={"maxiter": 100, "batch_limit": 16},
        )
    return cand[0].detach()


def trust_region(front_X, lengthscales, rng: np.random.Generator, half: float):
    """A box around one Pareto point, for high-dimensional continuous spaces (the local search
    region of TuRBO / MORBO): its centre is a row of ``front_X (p, d)`` drawn by ``rng``, its
    half-width ``half`` in each dimension times that dimension's lengthscale over their geometric
    mean (clipped to [1/4, 4]; ``lengthscales (d,)`` or ``None`` for equal widths), cut to the unit
    cube. Returns ``(lo, hi, centre)``, each ``(d,)``."""
    import torch

    centre = front_X[int(rng.integers(len(front_X)))]
    w = torch.ones_like(centre)
    if lengthscales is not None:
        ls = torch.as_tensor(lengthscales, dtype=centre.dtype)
        w = (ls / ls.log().mean().exp()).clamp(0.25, 4.0)
    return (centre - half * w).clamp(0, 1), (centre + half * w).clamp(0, 1), centre


def lengthscales(model, dim: int):
    """Mean ARD lengthscales ``(dim,)`` over the outputs of a ``SingleTaskGP`` (its kernel or
    the base kernel of a scaled one), ``None`` for other models."""
    kernel = getattr(model, "covar_module", None)
    kernel = getattr(kernel, "base_kernel", kernel)
    ls = getattr(kernel, "lengthscale", None)
    if ls is None or ls.shape[-1] != dim:
        return None
    return ls.detach().reshape(-1, dim).mean(0)


def score(acqf, codec: Codec, configs: list[dict], known: KnownObjectives | None) -> np.ndarray:
    """Acquisition values ``(n,)`` of ``n`` configs (``known`` is primed with them first)."""
    import torch

    enc = codec.encode(configs)
    if known is not None:
        known.prime(enc, configs)
    X = torch.tensor(enc, dtype=torch.double).unsqueeze(1)
    with torch.no_grad():
        out = [acqf(chunk) for chunk in torch.split(X, 256)]
    return torch.cat(out).numpy()


def candidate_pool(
    space,
    rng: np.random.Generator,
    front: list[dict],
    blocked: set[tuple],
    is_feasible: Callable[[dict], bool],
    size: int,
) -> list[dict]:
    """Up to ``size`` distinct valid configs, none in ``blocked`` (config keys) and each
    ``is_feasible``: ``size // 2`` random samples, then up to four random one-parameter moves of
    every config of ``front``, then random samples (at most 64) towards ``size``."""
    pool: dict[tuple, dict] = {}

    def add(config):
        key = config_key(config)
        if key not in blocked and key not in pool and is_feasible(config):
            pool[key] = config

    for c in space.sample(size // 2, seed=int(rng.integers(2**63 - 1))):
        add(c)
    if len(pool) < size and front:
        for config in front:
            for c in neighbours(space, config, rng, limit=4):
                add(c)
        if len(pool) < size:
            for c in space.sample(min(64, size - len(pool)), seed=int(rng.integers(2**63 - 1))):
                add(c)
    return list(pool.values())


def local_search(
    evaluate: Callable[[list[dict]], np.ndarray],
    space,
    rng: np.random.Generator,
    config: dict,
    value: float,
    allowed: Callable[[dict], bool],
    steps: int,
) -> tuple[dict, float]:
    """Best-improvement local search from ``config`` (acquisition ``value``) over its
    :func:`~autopeft.optim.mobo.search_space.neighbours` that are ``allowed``, at most ``steps``
    moves; stops when no neighbour improves. Returns the final ``(config, value)``."""
    for _ in range(steps):
        neigh = [c for c in neighbours(space, config, rng) if allowed(c)]
        if not neigh:
            break
        s = evaluate(neigh)
        j = int(np.argmax(s))
        if s[j] <= value:
            break
        config, value = neigh[j], s[j]
    return config, value


def optimize_discrete(
    acqf,
    space,
    codec: Codec,
    rng: np.random.Generator,
    front: list[dict],
    blocked: set[tuple],
    is_feasible: Callable[[dict], bool],
    known: KnownObjectives | None,
    pool_size: int,
    starts: int,
    steps: int,
) -> dict | None:
    """The best config found: the :func:`candidate_pool` scored in one batch, then the
    ``starts`` best improved by :func:`local_search` of ``steps`` moves. ``None`` when the pool
    is empty (every config near ``front`` and sampled is blocked or infeasible)."""
    configs = candidate_pool(space, rng, front, blocked, is_feasible, pool_size)
    if not configs:
        return None

    def evaluate(candidates):
        return score(acqf, codec, candidates, known)

    def allowed(config):
        return config_key(config) not in blocked and is_feasible(config)

    scores = evaluate(configs)
    top = np.argsort(-scores)[:starts]
    best_config, best_score = configs[top[0]], scores[top[0]]
    for i in top:
        config, value = local_search(evaluate, space, rng, configs[i], scores[i], allowed, steps)
        if value > best_score:
            best_config, best_score = config, value
    return best_config
