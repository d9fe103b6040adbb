"""The search space: parameters, constants, validation, sampling and encoding."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from autopeft.errors import InvalidConfig
from autopeft.peft import arch
from autopeft.peft.registry import PEFT_PREFIXES, check_peft_value
from autopeft.space.params import Param
from autopeft.space.spec import TOP_LEVEL_KEYS, parse_params, parse_peft

#: the fields whose combinations decide whether peft can inject a method on a model
_ROUTE_FIELDS = {"lora": ("targets", "variant", "init")}


def check_peft_routes(params: list[Param], constants: dict[str, Any], model_config: Any) -> None:
    """Refuse, naming the field, a space that can sample a config the model cannot take: a
    method injected by peft (DoRA, PiSSA, VeRA, LoHa...) on targets peft cannot adapt there
    (GPT-2's fused q/k/v, its Conv1D for LoHa / LoKr). Every combination of the method's
    target / variant / init choices is tried on the cost model with rank 1."""
    import itertools

    from autopeft.peft.cost import count_trainable
    from autopeft.peft.tuners import NAMES

    by_name = {p.name: p for p in params}

    def choices(key: str) -> tuple:
        if key in by_name:
            return by_name[key].choices or ()
        return (constants[key],) if key in constants else ()

    for method in ("lora", *NAMES):
        ranked = any(
            n == f"{method}.rank" or n.startswith(f"{method}.rank.") for n in (*by_name, *constants)
        )
        if not ranked:
            continue
        fields = _ROUTE_FIELDS.get(method, ("targets",))
        options = [[(f, v) for v in choices(f"{method}.{f}")] or [None] for f in fields]
        for combo in itertools.product(*options):
            config = {f"{method}.{f}": v for f, v in (c for c in combo if c is not None)}
            config[f"{method}.rank"] = 16 if method == "adalora" else 1
            try:
                count_trainable(config, model_config)
            except InvalidConfig as err:
                if not (err.field or "").startswith(f"{method}.") and err.field != "lora.targets":
                    raise
                raise InvalidConfig(
                    f"this space can sample {config} ({err.message}); narrow its choices for "
                    f"this model",
                    f"peft.{err.field}",
                ) from None


class SearchSpace:
    """A mixed, conditional search space over training knobs and PEFT structure.

    Build it with :meth:`from_dict` or :func:`autopeft.load_space`. A *config* is a flat
    dict of parameter name → value holding every active parameter and every constant.

    Invariants: ``validate(c)`` is idempotent; ``validate(decode(x))`` succeeds for any
    ``x``; ``decode(encode(c)) == c`` for a valid ``c`` up to float rounding.
    """

    def __init__(
        self,
        params: list[Param],
        constants: dict[str, Any],
        *,
        name: str | None = None,
        description: str | None = None,
        spec: dict | None = None,
        num_layers: int | None = None,
    ):
        self.name = name
        self.description = description
        self.num_layers = num_layers
        self._params = tuple(params)
        self._constants = dict(constants)
        self._spec = copy.deepcopy(spec) if spec is not None else None
        self._by_name = {p.name: p for p in self._params}
        if len(self._by_name) != len(self._params):
            seen: set[str] = set()
            dup = next(p.name for p in self._params if p.name in seen or seen.add(p.name))
            raise InvalidConfig("declared twice", dup)
        clash = sorted(set(self._by_name) & set(self._constants))
        if clash:
            raise InvalidConfig("is both a constant and a parameter", clash[0])
        self._check_conditions()
        features, start = [], 0
        for p in self._params:
            features.append((p.name, p.kind, slice(start, start + p.width)))
            start += p.width
        self._features = tuple(features)
        self._dim = start

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(
        cls, d: dict, model_config: Any = None, num_layers: int | None = None
    ) -> SearchSpace:
        """Build a space from the structure of a space YAML (see docs/config_format.md)."""
        if not isinstance(d, dict):
            raise InvalidConfig(f"a space must be a mapping, got {type(d).__name__}", "space")
        for key in d:
            if key not in TOP_LEVEL_KEYS:
                raise InvalidConfig(
                    f"unknown key {key!r}; allowed: {', '.join(TOP_LEVEL_KEYS)}", str(key)
                )
        if num_layers is None and model_config is not None:
            num_layers = arch.num_layers(model_config)
        params, constants = parse_params(d.get("params"))
        peft_params, peft_constants, needs_layers = parse_peft(d.get("peft"), num_layers)
        name = d.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidConfig(f"expected a string, got {name!r}", "name")
        if model_config is not None:
            check_peft_routes(params + peft_params, {**constants, **peft_constants}, model_config)
        return cls(
            params + peft_params,
            {**constants, **peft_constants},
            name=name,
            description=d.get("description"),
            spec=d,
            num_layers=num_layers,
        )

    def _check_conditions(self) -> None:
        seen: set[str] = set()
        for p in self._params:
            for parent, allowed in p.active_if:
                if parent in self._constants:
                    continue
                if parent not in self._by_name:
                    raise InvalidConfig(f"active_if refers to unknown parameter {parent!r}", p.name)
                if parent not in seen:
                    raise InvalidConfig(
                        f"active_if parent {parent!r} must be declared before it", p.name
                    )
                parent_param = self._by_name[parent]
                if parent_param.kind == "float":
                    raise InvalidConfig(f"active_if parent {parent!r} must be discrete", p.name)
                for value in allowed:
                    parent_param.check(value)
            seen.add(p.name)

    # ------------------------------------------------------------------ views
    @property
    def params(self) -> tuple[Param, ...]:
        return self._params

    @property
    def constants(self) -> dict[str, Any]:
        return dict(self._constants)

    @property
    def spec(self) -> dict | None:
        """The structure this space was built from (a copy), for storage and rebuilding."""
        return copy.deepcopy(self._spec)

    @property
    def dim(self) -> int:
        """Length of an encoded vector."""
        return self._dim

    @property
    def features(self) -> tuple[tuple[str, str, slice], ...]:
        """``(param_name, kind, slice of the encoded vector)`` for every parameter, in order."""
        return self._features

    @property
    def continuous_params(self) -> list[str]:
        return [p.name for p in self._params if p.kind == "float"]

    def per_layer_groups(self) -> dict[str, list[str]]:
        """Per-layer parameter names by group (``{"lora.rank": ["lora.rank.0", ...]}``)."""
        groups: dict[str, list[str]] = {}
        for p in self._params:
            if p.group is not None and p.layer is not None:
                groups.setdefault(p.group, []).append(p.name)
        return groups

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name or name in self._constants

    def __iter__(self) -> Iterator[Param]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"SearchSpace(name={self.name!r}, params={len(self._params)}, dim={self._dim})"

    # ------------------------------------------------------------------ configs
    def validate(self, config: dict) -> dict:
        """Return the normalised config (constants filled in, inactive parameters dropped,
        values cast to their type) or raise :class:`InvalidConfig` naming the key."""
        if not isinstance(config, dict):
            raise InvalidConfig(
                f"a config must be a mapping, got {type(config).__name__}", "config"
            )
        for key in config:
            if not isinstance(key, str):
                raise InvalidConfig(f"config keys must be strings, got {key!r}", str(key))
            if key not in self._by_name and key not in self._constants:
                hint = ""
                if key.startswith(PEFT_PREFIXES):
                    check_peft_value(key, config[key])  # names a malformed PEFT key precisely
                    hint = " (a valid PEFT key, but this space does not search it)"
                raise InvalidConfig(f"unknown parameter {key!r}{hint}", key)
        out: dict[str, Any] = {}
        for key, value in self._constants.items():
            if key in config and not _equal(config[key], value):
                raise InvalidConfig(f"is fixed to {value!r} by the space, got {config[key]!r}", key)
            out[key] = value
        for p in self._params:
            if not p.is_active(out):
                continue
            if p.name not in config:
                raise InvalidConfig("missing", p.name)
            out[p.name] = p.check(config[p.name])
        return out

    def sample(self, n: int = 1, seed: int | None = None) -> list[dict]:
        """``n`` configs drawn uniformly (log-uniformly for log parameters)."""
        rng = np.random.default_rng(seed)
        configs = []
        for _ in range(n):
            config = dict(self._constants)
            for p in self._params:
                if p.is_active(config):
                    config[p.name] = p.sample(rng)
            configs.append(config)
        return configs

    def default_config(self) -> dict:
        """Every active parameter at its default (low bound / first choice unless given)."""
        config = dict(self._constants)
        for p in self._params:
            if p.is_active(config):
                config[p.name] = p.default
        return config

    # ------------------------------------------------------------------ encoding
    def encode(self, config: dict) -> np.ndarray:
        """A valid config as a vector in ``[0, 1]^dim``; inactive parameters encode their default."""
        config = self.validate(config)
        x = np.zeros(self._dim)
        for p, (_, _, sl) in zip(self._params, self._features):
            x[sl] = p.to_unit(config.get(p.name, p.default))
        return x

    def decode(self, x: np.ndarray | list[float]) -> dict:
        """The valid config nearest to ``x`` (any reals; clipped to the unit cube)."""
        x = np.asarray(x, dtype=float).reshape(-1)
        if x.shape[0] != self._dim:
            raise ValueError(f"expected a vector of length {self._dim}, got {x.shape[0]}")
        config = dict(self._constants)
        for p, (_, _, sl) in zip(self._params, self._features):
            if p.is_active(config):
                config[p.name] = p.from_unit(x[sl])
        return config

    def canonical_vector(self, x: np.ndarray) -> np.ndarray:
        """Round ``x`` to the encoding of the config it decodes to (for de-duplication)."""
        return self.encode(self.decode(x))

    # ------------------------------------------------------------------ size
    def size(self) -> int:
        """Number of distinct configurations of the discrete parameters, counting conditional
        structure exactly (an inactive parameter contributes one state). Continuous parameters
        (``continuous_params``) are not counted."""
        components = self._components()
        total = 1
        for members in components:
            total *= self._count_component(members)
        return total

    def _components(self) -> list[list[Param]]:
        parent_of: dict[str, str] = {p.name: p.name for p in self._params}

        def find(a: str) -> str:
            while parent_of[a] != a:
                parent_of[a] = parent_of[parent_of[a]]
                a = parent_of[a]
            return a

        for p in self._params:
            for parent, _ in p.active_if:
                if parent in parent_of:
                    parent_of[find(p.name)] = find(parent)
        groups: dict[str, list[Param]] = {}
        for p in self._params:
            groups.setdefault(find(p.name), []).append(p)
        return list(groups.values())

    def _count_component(self, members: list[Param]) -> int:
        controlling = {parent for p in members for parent, _ in p.active_if}
        leaves = [p for p in members if p.name not in controlling]
        drivers = [p for p in members if p.name in controlling]

        def leaves_count(assign: dict) -> int:
            count = 1
            for p in leaves:
                if p.is_active(assign):
                    count *= p.n_levels or 1
            return count

        def walk(i: int, assign: dict) -> int:
            if i == len(drivers):
                return leaves_count(assign)
            p = drivers[i]
            if not p.is_active(assign):
                return walk(i + 1, assign)
            total = 0
            for value in p.values():
                assign[p.name] = value
                total += walk(i + 1, assign)
            del assign[p.name]
            return total

        if len(drivers) > 20:  # independent groups would already be split; guard the exponent
            raise ValueError("too many interacting conditional parameters to count exactly")
        return walk(0, dict(self._constants))

    def log10_size(self) -> float:
        return math.log10(self.size())


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b
