"""The ask/tell/report interface every optimiser implements, and the shared bookkeeping.

Invariants (every optimiser, checked by ``tests/optim/test_contract.py``):

* **Pure state.** An optimiser's state is a function of its construction arguments (space,
  objectives, seed, options) and the sequence of calls made on it (``ask``, ``tell``,
  ``report``, ``add_trial``). Randomness comes only from generators seeded by ``(seed, trial
  number, ...)``, never from a shared stream, so a controller rebuilds an optimiser after a
  restart by creating it with the same arguments and replaying the stored calls in order (the
  one rebuild path; the scheduler logs every call as an event, ``autopeft.api.scheduling.replay``).
* **Capabilities.** What a controller may rely on beyond the calls above is declared, never
  guessed from the optimiser's name: :attr:`BaseOptimizer.REBUILDS_BY_ADD` (every optimiser
  declares it) and :attr:`BaseOptimizer.population` (population-based training).
* **Ids.** Trial ids are the integers 0, 1, 2, ... in ask order; ``Suggestion.id`` is the id
  to pass to ``tell`` / ``report``.
* **Valid configs.** Every suggested config is ``space.validate``-normalised; a batch
  ``ask(n)`` never repeats a config within itself when the space has room, and avoids configs
  already tried while the space allows.
* **Values.** ``tell(id, values)`` takes the user's values (``maximize`` objectives as they
  are); internally objectives are compared in minimisation form (see ``pareto.py``).
  Objectives given by ``known_objectives`` are computed from the config when missing.
  ``tell(id, None, "failed")`` and ``"pruned"`` are always accepted. A ``"complete"`` tell
  with a non-finite objective is recorded as ``"failed"`` and the reason kept in
  ``Trial.note`` (not hidden).
* **Read-only views.** ``trials`` and ``pareto()`` return copies; mutating them does not
  change the optimiser.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from autopeft.errors import InvalidConfig
from autopeft.optim import pareto as _pareto
from autopeft.optim.checks import OPS, check_constraints, check_objectives
from autopeft.optim.records import (
    STATES,
    TELL_STATES,
    Exploit,
    Population,
    Suggestion,
    Trial,
    _TrialRecord,
    config_key,
    derive_seed,
)

__all__ = [
    "STATES",
    "BaseOptimizer",
    "Exploit",
    "Population",
    "Suggestion",
    "Trial",
    "config_key",
    "derive_seed",
]


class BaseOptimizer(abc.ABC):
    """Abstract optimiser. Subclasses implement :meth:`_suggest` and may override
    :meth:`_on_tell` and :meth:`_on_report`.

    Common options (every optimiser): ``constraints`` — list of ``(metric, op, bound)`` with op
    in ``<=, <, >=, >, ==`` (a trial that violates one is never on the Pareto front; a metric in
    ``known_objectives`` is checked before suggesting); ``warm_start`` — configs (e.g. another
    study's Pareto set, possibly for another layer count) asked first, mapped onto this space;
    ``known_objectives`` — ``{metric: fn(config) -> float}`` for metrics computed exactly;
    ``early_stopping`` — ``{"kind": "asha" | "moasha", "min_step", "reduction_factor",
    "max_step", "metric", "keep_front", "promotions", "brackets"}`` (``_stopping.py``); ``reference_point`` — user values per objective for hypervolume;
    ``exclude`` — ``fn(config) -> bool``: configs it is true of are never suggested while the
    space has others (the service sets it: a config that trains no adapter, while the study's
    linear probe holds that point).
    """

    name: ClassVar[str] = "base"
    #: Capability, declared by every optimiser (no default): True when a suggestion depends only
    #: on its trial number and the told data, so registering a stored trial's config with
    #: ``add_trial(config, state="running")`` in place of replaying its ``ask`` rebuilds the same
    #: optimiser without recomputing the suggestion (a GP fit per trial for ``mobo``). False
    #: where the ask itself changes state (Optuna's study, a PBT member's later exploits).
    REBUILDS_BY_ADD: ClassVar[bool]
    #: option names this optimiser accepts besides the common ones (with defaults)
    OPTIONS: ClassVar[dict[str, Any]] = {}
    COMMON_OPTIONS: ClassVar[tuple[str, ...]] = (
        "constraints",
        "warm_start",
        "known_objectives",
        "early_stopping",
        "reference_point",
        "exclude",
    )

    def __init__(self, space, objectives: Sequence[tuple[str, str]], seed: int = 0, **options: Any):
        self.space = space
        self.objectives = check_objectives(objectives)
        self.objective_names = [n for n, _ in self.objectives]
        self.directions = [d for _, d in self.objectives]
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InvalidConfig(f"seed must be an integer, got {seed!r}", "seed")
        self.seed = seed
        for key in options:
            if key not in self.OPTIONS and key not in self.COMMON_OPTIONS:
                allowed = ", ".join(sorted(set(self.OPTIONS) | set(self.COMMON_OPTIONS)))
                raise InvalidConfig(
                    f"unknown option {key!r} for optimiser {self.name!r}; allowed: {allowed}", key
                )
        self.options = {**self.OPTIONS, **{k: v for k, v in options.items() if k in self.OPTIONS}}
        self.known_objectives: dict[str, Callable[[dict], float]] = dict(
            options.get("known_objectives") or {}
        )
        for key, fn in self.known_objectives.items():
            if not callable(fn):
                raise InvalidConfig(
                    f"known_objectives[{key!r}] must be callable", "known_objectives"
                )
        self.constraints = check_constraints(options.get("constraints"))
        self._exclude: Callable[[dict], bool] | None = options.get("exclude")
        if self._exclude is not None and not callable(self._exclude):
            raise InvalidConfig("must be callable: fn(config) -> bool", "exclude")
        ref = options.get("reference_point")
        if ref is not None:
            if len(ref) != len(self.objectives):
                raise InvalidConfig(
                    f"needs {len(self.objectives)} values, got {len(ref)}", "reference_point"
                )
            ref = _pareto.to_minimization(np.asarray(ref, float).reshape(1, -1), self.directions)[0]
        self.reference_point_min = ref
        from autopeft.optim.warmstart import map_configs

        self._warm = map_configs(options.get("warm_start") or [], space)
        self._warm_pos = 0  # the next warm-start config to look at (see _next_warm)
        from autopeft.optim._stopping import make_stopper

        self._stopper = make_stopper(options.get("early_stopping"), self.directions)
        self._records: list[_TrialRecord] = []
        self._seen: set[tuple] = set()

    # ------------------------------------------------------------------ public API
    def ask(self, n: int = 1) -> list[Suggestion]:
        """Suggest ``n`` new trials (registered as ``running``)."""
        if not isinstance(n, int) or n < 1:
            raise InvalidConfig(f"n must be a positive integer, got {n!r}", "n")
        out: list[Suggestion] = []
        batch_keys: set[tuple] = set()
        while len(out) < n:
            first = len(self._records)
            k = n - len(out)
            proposals = [(c, None, None) for c in self._next_warm(k, batch_keys)]
            if len(proposals) < k:
                proposals += self._suggest(k - len(proposals), first + len(proposals))
            for config, parent, budget in proposals:
                number = len(self._records)
                config = self._ensure_new(config, number, batch_keys)
                record = _TrialRecord(number, config, parent)
                self._records.append(record)
                key = config_key(config)
                batch_keys.add(key)
                self._seen.add(key)
                self._on_ask(record)
                out.append(Suggestion(number, dict(config), parent, budget))
        return out

    def tell(self, id: int, values: Mapping[str, float] | None, state: str = "complete") -> Trial:
        """Finish trial ``id`` with ``values`` (``None`` allowed unless ``complete``)."""
        record = self._record(id)
        if state not in TELL_STATES:
            raise InvalidConfig(
                f"state must be one of {', '.join(TELL_STATES)}, got {state!r}", "state"
            )
        if record.state != "running":
            raise InvalidConfig(f"trial {id} was already told ({record.state})", "id")
        if values is not None:
            values = self._complete_values(record.config, values)
        if state == "complete":
            if values is None:
                raise InvalidConfig("a complete trial needs values", "values")
            missing = [m for m in self._required_metrics() if m not in values]
            if missing:
                raise InvalidConfig(
                    f"missing metric {missing[0]!r} (objective or constraint)", missing[0]
                )
            bad = [m for m in self.objective_names if not math.isfinite(values[m])]
            if bad:
                state = "failed"
                record.note = (
                    f"told complete with non-finite {bad[0]}={values[bad[0]]}; recorded as failed"
                )
        record.state = state
        record.values = values
        if self._stopper is not None:
            self._stopper.forget(record.id)
        self._on_tell(record)
        return record.snapshot()

    def report(self, id: int, step: int, values: Mapping[str, float]) -> str | Exploit:
        """An intermediate result of a running trial. Returns ``"continue"``, ``"stop"`` (early
        stopping: tell it ``"pruned"``), ``"pause"`` (early stopping with promotions: stop it,
        keep its checkpoint, and resume it when :meth:`promotion` names it) or an
        :class:`Exploit` (PBT)."""
        record = self._record(id)
        if record.state != "running":
            raise InvalidConfig(f"trial {id} is {record.state}, not running", "id")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InvalidConfig(f"step must be a non-negative integer, got {step!r}", "step")
        values = self._complete_values(record.config, values)
        record.reports[step] = values
        decision = self._on_report(record, step, values)
        if decision == "continue" and self._stopper is not None:
            y = self._objective_vector(values)
            if y is not None:
                decision = self._stopper.decide(id, step, y)
        return decision

    def promotion(self) -> int | None:
        """A paused trial (``report`` answered ``"pause"``) to resume before asking for a new one,
        or None (early stopping with ``promotions``; see ``_stopping.py``)."""
        return self._stopper.promotion() if self._stopper is not None else None

    def resume(self, id: int) -> None:
        """The caller resumes paused trial ``id`` from its checkpoint (its next reports follow)."""
        record = self._record(id)
        if record.state != "running":
            raise InvalidConfig(f"trial {id} is {record.state}, not paused", "id")
        if self._stopper is not None:
            self._stopper.resume(id)

    @property
    def paused(self) -> tuple[int, ...]:
        """Trials waiting at a rung for a promotion (still ``running`` until told)."""
        return self._stopper.paused if self._stopper is not None else ()

    def pareto(self) -> list[Trial]:
        """Complete, feasible trials on the first non-dominated front (copies)."""
        records = [r for r in self._records if r.state == "complete" and self.is_feasible(r.values)]
        if not records:
            return []
        Y = self._Y(records)
        mask = _pareto.is_non_dominated(Y)
        return [r.snapshot() for r, keep in zip(records, mask) if keep]

    def hypervolume(self, ref_point: Sequence[float] | None = None) -> float:
        """Hypervolume of the feasible complete trials; ``ref_point`` in user values (default: the
        ``reference_point`` option, else the rule of :func:`pareto.reference_point`)."""
        records = [r for r in self._records if r.state == "complete" and self.is_feasible(r.values)]
        if not records:
            return 0.0
        Y = self._Y(records)
        if ref_point is not None:
            ref = _pareto.to_minimization(
                np.asarray(ref_point, float).reshape(1, -1), self.directions
            )[0]
        else:
            ref = _pareto.reference_point(Y, self.reference_point_min)
        return _pareto.hypervolume(Y, ref)

    @property
    def trials(self) -> tuple[Trial, ...]:
        """Snapshots of every trial in id order."""
        return tuple(r.snapshot() for r in self._records)

    @property
    def population(self) -> Population | None:
        """Capability: None, or how the members of a population-based optimiser train (PBT:
        ``report`` may answer an :class:`Exploit` every ``interval`` reports of a member). A
        controller may then run members in turns of ``interval`` reports, ``size`` alive."""
        return None

    def add_trial(
        self, config: dict, values: Mapping[str, float] | None = None, state: str = "complete"
    ) -> Trial:
        """Register a trial that was evaluated elsewhere (or before a restart) without asking."""
        config = self.space.validate(config)
        record = _TrialRecord(len(self._records), config)
        self._records.append(record)
        self._seen.add(config_key(config))
        self._on_ask(record)
        if state == "running":
            return record.snapshot()
        return self.tell(record.id, values, state)

    def _next_warm(self, k: int, batch_keys: set[tuple]) -> list[dict]:
        """Up to ``k`` warm-start configs not proposed yet, in order, skipping those already
        registered (a reused result added with ``add_trial``, a config enqueued or attached by the
        user): the list is walked with a cursor, so a trial added between two asks never makes
        one of them skipped."""
        out = []
        while len(out) < k and self._warm_pos < len(self._warm):
            config = self._warm[self._warm_pos]
            self._warm_pos += 1
            key = config_key(config)
            if key not in self._seen and key not in batch_keys:
                out.append(config)
        return out

    # ------------------------------------------------------------------ helpers for subclasses
    def rng(self, *salt: int | str) -> np.random.Generator:
        """A generator seeded by ``(seed, *salt)``; use the trial number as salt."""
        return np.random.default_rng(derive_seed(self.seed, *salt))

    def is_feasible(self, values: Mapping[str, float] | None) -> bool:
        if values is None:
            return False
        for metric, op, bound in self.constraints:
            if metric not in values or not OPS[op](values[metric], bound):
                return False
        return True

    def violation(self, values: Mapping[str, float]) -> np.ndarray:
        """Per constraint, ``g <= 0`` means satisfied (``g = value - bound`` for ``<=``)."""
        out = []
        for metric, op, bound in self.constraints:
            v = values[metric]
            out.append(v - bound if op in ("<=", "<", "==") else bound - v)
        return np.asarray(out, float)

    def config_is_feasible(self, config: dict) -> bool:
        """Constraints on metrics in ``known_objectives`` hold for ``config`` (others unknown →
        True) and ``exclude`` is not true of it."""
        if self._exclude is not None and self._exclude(config):
            return False
        for metric, op, bound in self.constraints:
            fn = self.known_objectives.get(metric)
            if fn is not None and not OPS[op](float(fn(config)), bound):
                return False
        return True

    def _Y(self, records: Sequence[_TrialRecord]) -> np.ndarray:
        """``(n, m)`` objective values of ``records`` in minimisation form."""
        raw = np.array([[r.values[k] for k in self.objective_names] for r in records], float)
        return _pareto.to_minimization(raw.reshape(len(records), -1), self.directions)

    def _objective_vector(self, values: Mapping[str, float]) -> np.ndarray | None:
        if not all(k in values and math.isfinite(values[k]) for k in self.objective_names):
            return None
        return _pareto.to_minimization(
            np.array([[values[k] for k in self.objective_names]]), self.directions
        )[0]

    def _records_in(self, *states: str) -> list[_TrialRecord]:
        return [r for r in self._records if r.state in states]

    def _random_config(self, number: int, attempt: int = 0) -> dict:
        """A uniform random valid config, feasible for known constraints when one is found."""
        rng = self.rng(number, "random", attempt)
        config = self.space.validate(self.space.sample(1, seed=int(rng.integers(2**63 - 1)))[0])
        for _ in range(200):
            if self.config_is_feasible(config):
                break
            config = self.space.validate(self.space.sample(1, seed=int(rng.integers(2**63 - 1)))[0])
        return config

    def _ensure_new(self, config: dict, number: int, batch_keys: set[tuple]) -> dict:
        """Validate; replace a config repeated in this batch (or tried before, or infeasible for a
        known constraint) by a random one while the space has room."""
        config = self.space.validate(config)
        key = config_key(config)
        if key not in batch_keys and key not in self._seen and self.config_is_feasible(config):
            return config
        fallback = config
        new = None  # the first unseen one, feasible or not
        for attempt in range(50):
            candidate = self._random_config(number, attempt)
            ck = config_key(candidate)
            if ck not in batch_keys and ck not in self._seen:
                if self.config_is_feasible(candidate):
                    return candidate
                new = new or candidate
            if ck not in batch_keys and config_key(fallback) in batch_keys:
                fallback = candidate
        return new or fallback  # the space is (nearly) exhausted

    def _complete_values(self, config: dict, values: Mapping[str, float]) -> dict:
        if not isinstance(values, Mapping):
            raise InvalidConfig(
                f"values must be a mapping of metric to number, got {type(values).__name__}",
                "values",
            )
        out = {}
        for k, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise InvalidConfig(f"expected a number, got {v!r}", str(k))
            out[str(k)] = float(v)
        for k, fn in self.known_objectives.items():
            if k not in out:
                out[k] = float(fn(config))
        return out

    def _required_metrics(self) -> list[str]:
        return list(dict.fromkeys(self.objective_names + [m for m, _, _ in self.constraints]))

    def _record(self, id: int) -> _TrialRecord:
        if not isinstance(id, (int, np.integer)) or not (0 <= int(id) < len(self._records)):
            raise InvalidConfig(f"unknown trial id {id!r}", "id")
        return self._records[int(id)]

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _suggest(self, n: int, first_number: int) -> list[tuple[dict, int | None, float | None]]:
        """Return ``n`` proposals ``(config, parent_id, budget)`` for trial numbers
        ``first_number, first_number + 1, ...``. Running trials are pending evaluations. The
        base class validates, de-duplicates and registers them."""

    def _on_ask(self, record: _TrialRecord) -> None:
        """Called after a trial is registered (from ``ask`` or ``add_trial``)."""

    def _on_tell(self, record: _TrialRecord) -> None:
        """Called after a trial is finished."""

    def _on_report(self, record: _TrialRecord, step: int, values: dict) -> str | Exploit:
        return "continue"
