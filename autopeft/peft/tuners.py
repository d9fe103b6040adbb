"""The methods only Hugging Face peft injects: VeRA, LoHa, LoKr and AdaLoRA (issue 35).

Each is a :class:`~autopeft.peft.method.Method` like the ones written here (keys, spec, check,
exact count) whose injection is peft's own (:mod:`autopeft.peft.peftlib` builds the peft config).
Targets are logical projections (``q``, ``v``, ``ffn_in``... or ``all``) on every layer whose
``layers.{i}`` mask is on (and, for per-layer ranks, whose rank is > 0). peft adapts whole modules,
so on a fused projection (GPT-2 ``c_attn``) ``q``/``k``/``v`` cannot be targets; peft's LoHa and
LoKr do not take GPT-2's ``Conv1D`` at all. Both are :class:`InvalidConfig` naming the targets key.

Parameters per adapted projection of shape ``(in, out)`` (``r`` its rank):

* ``vera``: ``r + out`` (the scaling vectors ``lambda_d`` and ``lambda_b``; the random projections
  shared by all layers are frozen buffers, rebuilt from ``projection_prng_key``);
* ``loha``: ``2 r (in + out)`` (two Hadamard-multiplied low-rank pairs);
* ``lokr``: ``w1 + w2`` with ``out = a * b``, ``in = c * d`` (peft's ``factorization`` with
  ``lokr.factor``): ``w1`` is ``a c`` (or ``r (a + c)`` when ``lokr.decompose_both`` and
  ``r < max(a, c) / 2``), ``w2`` is ``b d`` unless ``r < max(b, d) / 2``, then ``r (b + d)``;
* ``adalora``: ``r (in + out + 1)`` for the initial rank ``r`` (``lora_A``, ``lora_B`` and the
  singular values ``lora_E``). AdaLoRA prunes singular values during training down to
  ``target_rank`` on average per projection (the pruned entries stay parameters, held at zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.errors import InvalidConfig
from autopeft.peft.arch import LOGICAL, ArchDesc
from autopeft.peft.method import (
    ALL_TARGETS,
    Key,
    Method,
    check_positive,
    check_size,
    check_unit,
    split_targets,
    target_checker,
)

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.modelmap import ModelMap

FUSED = ("q", "k", "v")


def check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidConfig(f"expected true or false, got {value!r}", where)
    return value


def check_factor(value: Any, where: str) -> int:
    """LoKr's decomposition factor: -1 (near the square root) or an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or (value != -1 and value < 1):
        raise InvalidConfig(f"expected -1 or an integer >= 1, got {value!r}", where)
    return value


def check_nonnegative(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidConfig(f"expected a number >= 0, got {value!r}", where)
    return float(value)


def check_fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise InvalidConfig(f"expected a number in [0, 1), got {value!r}", where)
    return float(value)


TARGETS = Key(target_checker(LOGICAL, allow_empty=False, all_alias=True), default="q,v")


@dataclass(frozen=True)
class TunerSpec:
    """A peft-injected method: ``rank`` per layer (0 where off), its targets and options."""

    name: str
    rank: tuple[int, ...]
    targets: tuple[str, ...]
    options: Mapping[str, Any]

    @property
    def active(self) -> bool:
        return any(self.rank)

    def targets_in(self, available) -> tuple[str, ...]:
        if self.targets == (ALL_TARGETS,):
            return tuple(t for t in LOGICAL if t in available)
        return self.targets

    @property
    def key(self) -> str:
        return f"{self.name}.targets"


def _builder(name: str, per_layer: bool):
    def build(values: Mapping[str, Any], layers: tuple[bool, ...]) -> TunerSpec:
        rank = values["rank"]
        if not per_layer:  # one rank for every layer whose mask is on
            rank = tuple(int(rank) if on else 0 for on in layers)
        options = {k: v for k, v in values.items() if k not in ("rank", "targets")}
        return TunerSpec(name, tuple(rank), split_targets(values["targets"]), options)

    return build


def _refuse(spec: TunerSpec, targets: tuple[str, ...], fused: bool, conv1d: bool) -> None:
    """The targets peft cannot express for ``spec`` on this architecture."""
    if fused and set(targets) & set(FUSED):
        raise InvalidConfig(
            f"{spec.name} is injected by peft, which adapts whole modules: this model fuses q, k "
            "and v in one projection (GPT-2 c_attn), so q/k/v cannot be targets (use o, ffn_in, "
            "ffn_out)",
            spec.key,
        )
    if conv1d and spec.name in ("loha", "lokr"):
        raise InvalidConfig(
            f"peft's {spec.name} does not support GPT-2's Conv1D projections", spec.key
        )


def check(model: nn.Module, mmap: ModelMap, spec: TunerSpec) -> None:
    if not spec.active:
        return
    available = mmap.layers[0].projs
    targets = spec.targets_in(available)
    missing = [t for t in targets if t not in available]
    if missing:
        raise InvalidConfig(
            f"this model has no {', '.join(missing)} projection (it has "
            f"{', '.join(sorted(available))})",
            spec.key,
        )
    fused = any(available[t].sliced for t in available)
    _refuse(spec, targets, fused, fused)  # the fused models here are GPT-2 (Conv1D)
    _check_options(spec)


def _check_options(spec: TunerSpec) -> None:
    if spec.name == "adalora":
        init = max(spec.rank)
        if spec.options["target_rank"] > init:
            raise InvalidConfig(
                f"AdaLoRA's target rank ({spec.options['target_rank']}) must be <= its initial "
                f"rank adalora.rank ({init})",
                "adalora.target_rank",
            )
        if spec.options["warmup"] + spec.options["final"] >= 1:
            raise InvalidConfig(
                "adalora.warmup + adalora.final must leave part of the training (sum < 1)",
                "adalora.final",
            )


def inject(model: nn.Module, mmap: ModelMap, spec: TunerSpec) -> None:
    """The own path never injects these (``peftlib.route`` sends an active one to peft)."""
    if spec.active:
        raise InvalidConfig(f"{spec.name} is injected by peft only", spec.key)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """peft's LoKr factorisation (``peft.tuners.lokr.layer.factorization``): ``(m, n)``, ``m * n =
    dimension``, ``m <= n``, ``m`` near ``factor`` (or the square root for -1)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


def module_params(spec: TunerSpec, rank: int, in_f: int, out_f: int) -> int:
    """Trainable parameters of ``spec``'s method on one ``(in_f, out_f)`` projection."""
    if spec.name == "vera":
        return rank + out_f
    if spec.name == "loha":
        return 2 * rank * (in_f + out_f)
    if spec.name == "adalora":
        return rank * (in_f + out_f + 1)
    factor = spec.options["factor"]
    c, d = factorization(in_f, factor)
    a, b = factorization(out_f, factor)
    w1 = rank * (a + c) if spec.options["decompose_both"] and rank < max(a, c) / 2 else a * c
    w2 = rank * (b + d) if rank < max(b, d) / 2 else b * d
    return w1 + w2


def count(spec: TunerSpec, desc: ArchDesc) -> int:
    if not spec.active:
        return 0
    targets = spec.targets_in(desc.projections)
    for t in targets:
        desc.linear_shape(t)  # unknown projection -> InvalidConfig
    _refuse(spec, targets, desc.fused_qkv, desc.family == "gpt2")
    _check_options(spec)
    return sum(
        module_params(spec, r, *desc.linear_shape(t)) for r in spec.rank if r for t in targets
    )


def _method(name: str, keys: dict[str, Key], per_layer: bool, order: int) -> Method:
    return Method(name, keys, _builder(name, per_layer), check, inject, count, inject_order=order)


VERA = _method(
    "vera",
    {
        "rank": Key(check_size, default=0),
        "targets": TARGETS,
        "dropout": Key(check_unit, default=0.0),
        "d_initial": Key(check_positive, default=0.1),
    },
    per_layer=False,
    order=5,
)


def _lycoris(name: str, order: int, **extra: Key) -> Method:
    """LoHa / LoKr: per-layer ranks, targets and an alpha ratio, plus their own options."""
    keys = {
        "rank": Key(check_size, per_layer=True, default=0),
        "targets": TARGETS,
        "alpha_ratio": Key(check_positive, default=1.0),
        **extra,
    }
    return _method(name, keys, per_layer=True, order=order)


LOHA = _lycoris("loha", 6, dropout=Key(check_unit, default=0.0))
LOKR = _lycoris(
    "lokr",
    7,
    decompose_both=Key(check_bool, default=False),
    factor=Key(check_factor, default=-1),
)
ADALORA = _method(
    "adalora",
    {
        "rank": Key(check_size, default=0),  # the initial rank of every adapted projection
        "target_rank": Key(check_size, default=8),  # the average rank kept at the end
        "targets": TARGETS,
        "alpha_ratio": Key(check_positive, default=2.0),
        "dropout": Key(check_unit, default=0.0),
        "orth_reg": Key(check_nonnegative, default=0.5),
        "warmup": Key(check_fraction, default=0.1),  # fraction of steps before pruning starts
        "final": Key(check_fraction, default=0.2),  # fraction of steps with the budget fixed
    },
    per_layer=False,
    order=8,
)
METHODS = (VERA, LOHA, LOKR, ADALORA)
NAMES = tuple(m.name for m in METHODS)
