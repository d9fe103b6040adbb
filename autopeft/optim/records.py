"""What optimisers hand out and keep: suggestions, PBT exploits, trial snapshots and records,
the population capability, and the seeds and config identities they are built on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATES = ("running", "complete", "failed", "pruned")
TELL_STATES = ("complete", "failed", "pruned")


@dataclass(frozen=True)
class Suggestion:
    """One config to evaluate. ``parent_id``: the trial it was derived from (PBT, warm-start
    none); ``budget``: the step budget to train for when the optimiser sets one."""

    id: int
    config: dict
    parent_id: int | None = None
    budget: float | None = None


@dataclass(frozen=True)
class Exploit:
    """``report`` answer of PBT: load trial ``source_id``'s latest checkpoint, continue with
    ``config``. ``changes`` maps each changed key to ``(old, new)`` relative to the source."""

    source_id: int
    config: dict
    step: int
    changes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Population:
    """How the members of a population-based optimiser train (``BaseOptimizer.population``):
    ``size`` members alive at once (training or between segments), a possible :class:`Exploit`
    every ``interval`` reports of a member, none at or after ``max_step`` (None: no last step)."""

    size: int
    interval: int
    max_step: int | None = None


@dataclass(frozen=True)
class Trial:
    """A read-only snapshot of one trial."""

    id: int
    config: dict
    state: str
    values: dict | None = None
    parent_id: int | None = None
    reports: dict = field(default_factory=dict)  # step -> values
    note: str | None = None

    @property
    def last_step(self) -> int | None:
        return max(self.reports) if self.reports else None


class _TrialRecord:
    """Mutable internal record (never handed out; see :meth:`snapshot`)."""

    __slots__ = ("id", "config", "state", "values", "parent_id", "reports", "note")

    def __init__(self, id: int, config: dict, parent_id: int | None = None):
        self.id, self.config, self.parent_id = id, dict(config), parent_id
        self.state, self.values, self.reports, self.note = "running", None, {}, None

    def snapshot(self) -> Trial:
        return Trial(
            self.id,
            dict(self.config),
            self.state,
            None if self.values is None else dict(self.values),
            self.parent_id,
            {s: dict(v) for s, v in self.reports.items()},
            self.note,
        )


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from integers / strings, stable across processes (no ``hash()``)."""
    ints = [
        int(p) if not isinstance(p, str) else sum((i + 1) * ord(c) for i, c in enumerate(p))
        for p in parts
    ]
    state = np.random.SeedSequence([abs(i) for i in ints]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 ^ int(state[1])) & ((1 << 63) - 1)


def config_key(config: Mapping[str, Any]) -> tuple:
    """Hashable identity of a config (floats rounded to 12 significant digits)."""
    return tuple(
        sorted((k, float(f"{v:.12g}") if isinstance(v, float) else v) for k, v in config.items())
    )
