"""The encoding ``mobo`` models on, and one-parameter moves between valid configs.

Encodings are ``space.encode``'s: ``(d,)`` in ``[0, 1]^d``, categorical one-hot, ordinals as
``index / (k - 1)``, log parameters log-scaled; an inactive conditional parameter takes its
default's coordinates.
"""

from __future__ import annotations

import numpy as np


class Codec:
    """``space.encode`` for many configs at once, without re-validating each (the configs here
    are built from valid values); same output as ``space.encode`` for a valid config."""

    def __init__(self, space):
        self.dim = space.dim
        self.items = []
        for p, (_, _, sl) in zip(space.params, space.features):
            table = None
            if p.kind in ("ordinal", "categorical"):
                table = {(isinstance(c, bool), c): np.asarray(p.to_unit(c)) for c in p.choices}
            self.items.append((p, sl, table, np.asarray(p.to_unit(p.default))))

    def encode(self, configs) -> np.ndarray:
        """``(n, d)`` encodings of ``n`` valid configs."""
        X = np.zeros((len(configs), self.dim))
        for i, config in enumerate(configs):
            row = X[i]
            for p, sl, table, default in self.items:
                v = config.get(p.name)
                if v is None:
                    row[sl] = default
                elif table is not None:
                    row[sl] = table[(isinstance(v, bool), v)]
                else:
                    row[sl] = p.to_unit(v)
        return X


def neighbours(space, config: dict, rng: np.random.Generator, limit: int | None = None):
    """Valid configs one parameter away from ``config``: adjacent ordinal / integer levels and a
    random integer, every other category, float moves of random size at two scales (0.02 and
    0.1 of the unit interval) either way. Parameters made inactive are dropped and newly active
    ones get their default. ``limit``: a random subset of at most that many."""
    out = []
    for p in space.params:
        if p.name not in config:
            continue
        v = config[p.name]
        if p.kind == "float":
            u = p.to_unit(v)[0]
            for scale in (0.02, 0.1):
                for sign in (-1, 1):
                    step = sign * abs(rng.normal(scale, scale / 2))
                    out.append({**config, p.name: p.from_unit([u + step])})
        elif p.kind == "int":
            for d in (-1, 1):
                if p.low <= v + d <= p.high:
                    out.append({**config, p.name: v + d})
            out.append({**config, p.name: p.sample(rng)})
        elif p.kind == "ordinal":
            i = p.index(v)
            for d in (-1, 1):
                if 0 <= i + d < len(p.choices):
                    out.append({**config, p.name: p.choices[i + d]})
        else:
            out.extend({**config, p.name: c} for c in p.choices if c != v)
    out = [_fill(space, c) for c in out]
    if limit is not None and len(out) > limit:
        idx = rng.choice(len(out), size=limit, replace=False)
        out = [out[i] for i in idx]
    return out


def _fill(space, config: dict) -> dict:
    """``config`` with the parameters it made inactive dropped and the newly active ones at their
    default."""
    out = dict(space.constants)
    for p in space.params:
        if p.is_active(out):
            out[p.name] = config.get(p.name, p.default)
    return out
