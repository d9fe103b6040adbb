"""The peft path: Hugging Face peft injects every config it can express (issue 35).

:func:`route` decides, for a parsed :class:`~autopeft.peft.config.PeftSpec` on a mapped model,
which path injects it:

* ``peft``: a config of exactly one of LoRA (its whole family: DoRA, rsLoRA, PiSSA / OLoRA /
  Gaussian init, per-layer ranks through ``rank_pattern`` / ``alpha_pattern``), VeRA, LoHa, LoKr,
  AdaLoRA, IA3 or prompt tuning (:mod:`autopeft.peft.prompt`: peft's prompt embedding and its
  prompt forward as a pre-hook), with no target that is a slice of a fused projection;
* ``own``: everything peft cannot express, injected by the modules written here (``host.py``,
  ``attention.py``): bottleneck adapters, prefix tuning, a LoRA or IA3 on a q/k/v slice of GPT-2's
  fused ``c_attn``, and any config mixing methods.

A config that needs peft (a method only peft implements, DoRA, an init other than Kaiming) but
holds something only the own path can do is :class:`InvalidConfig` naming the key, before any
model is touched. ``engine`` forces a path where both can inject the config (the loss curves of
the two paths are compared in the tests); forcing one that cannot is an error naming
``peft_engine``.

The tuner (peft's ``LoraModel``, ``VeraModel``...) is kept on the model (``model.__dict__``, not a
sub-module) for what training needs from it: :func:`training_hooks` gives AdaLoRA's orthogonal
regularisation and its rank allocation after each optimiser step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autopeft.errors import InvalidConfig
from autopeft.peft.tuners import NAMES as TUNER_NAMES

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.config import PeftSpec
    from autopeft.peft.modelmap import ModelMap

ENGINES = ("auto", "peft", "own")
#: LoRA inits that change the base weight (it keeps the residual): export converts them
CONVERTED = ("pissa", "olora")
INITIAL_ATTR = "_autopeft_initial_lora"  # in model.__dict__: {path: (A0, B0)} for CONVERTED
ADAPTER = "default"
TUNER_ATTR = "_autopeft_tuner"  # in model.__dict__: the peft tuner object
PROMPT_CONFIG = "_autopeft_prompt_config"  # in model.__dict__: peft's PromptTuningConfig
#: the methods only peft injects, and the key that names each in an error
ONLY_PEFT = {**{name: f"{name}.rank" for name in TUNER_NAMES}, "prompt": "prompt.length"}
#: the methods a peft config can hold (one of them per config)
PEFT_METHODS = ("lora", "ia3", *ONLY_PEFT)
#: the methods written here too: a config of one of them goes to peft unless ``engine`` is "own"
BOTH = (("lora",), ("ia3",))


def check_engine(engine: Any, field: str = "peft_engine") -> str:
    if engine not in ENGINES:
        raise InvalidConfig(f"expected one of {', '.join(ENGINES)}, got {engine!r}", field)
    return engine


def _sliced(spec: PeftSpec, mmap: ModelMap) -> bool:
    """Whether the LoRA or IA3 targets include a slice of a fused projection."""
    projs = mmap.layers[0].projs
    lora, ia3 = spec["lora"], spec["ia3"]
    targets = (lora.targets_in(projs) if lora.active else ()) + (ia3.targets if ia3.active else ())
    return any(projs[t].sliced for t in targets if t in projs)


def needs_peft(spec: PeftSpec) -> str | None:
    """The key of the first part of ``spec`` that only peft can inject, or None."""
    lora = spec["lora"]
    if lora.needs_peft:
        return "lora.variant" if lora.variant == "dora" else "lora.init"
    for name, key in ONLY_PEFT.items():
        if spec[name].active:
            return key
    return None


def route(spec: PeftSpec, mmap: ModelMap, engine: str = "auto") -> str:
    """``"peft"`` or ``"own"``: which path injects ``spec`` into the mapped model."""
    return decide(spec, _sliced(spec, mmap), engine)


def decide(spec: PeftSpec, sliced: bool, engine: str = "auto") -> str:
    """:func:`route` given whether the LoRA targets include a fused slice (the cost model calls
    it with the slice read from the config, so both refuse the same configs with the same key)."""
    check_engine(engine)
    active = spec.methods
    needed = needs_peft(spec)
    peft_ok = len(active) == 1 and active[0] in PEFT_METHODS and not sliced
    if needed is not None:
        if len(active) > 1:
            other = next(m for m in active if m != needed.split(".")[0])
            raise InvalidConfig(
                f"{needed.split('.')[0]} is injected by Hugging Face peft, which takes one method "
                f"per config: it cannot be combined with {other} (make a config of one method)",
                needed,
            )
        if not peft_ok:  # a LoRA on a fused slice
            raise InvalidConfig(
                f"{needed} is injected by Hugging Face peft, which adapts whole modules: this "
                "model fuses q, k and v in one projection (GPT-2 c_attn), so q/k/v cannot be "
                "targets (use o, ffn_in, ffn_out)",
                "lora.targets",
            )
        if engine == "own":
            raise InvalidConfig(f"{needed} can only be injected by peft", "peft_engine")
        return "peft"
    if engine == "peft" and not peft_ok:
        raise InvalidConfig(
            "peft cannot express this config (a mix of methods, bottleneck adapters, prefix "
            "tuning, or a LoRA or IA3 on a fused q/k/v slice): use peft_engine 'own' or 'auto'",
            "peft_engine",
        )
    if engine == "own" or not peft_ok or active not in BOTH:
        return "own"
    return "peft"


def _paths(mmap: ModelMap, targets: Sequence[str], ranks: Sequence[int], field: str):
    """``[(module path, rank)]`` of every adapted projection, in the model's module order."""
    out = []
    for layer in mmap.layers:
        rank = ranks[layer.index]
        if not rank:
            continue
        for target in targets:
            out.append((mmap.proj(layer.index, target, field).path, rank))
    return out


def peft_config(spec: PeftSpec, mmap: ModelMap, model: nn.Module | None = None) -> Any:
    """The peft config that injects ``spec`` (a config :func:`route` sends to peft)."""
    import peft

    (name,) = spec.methods
    method = spec[name]
    if name == "ia3":  # peft's "feedforward" IA3 on ffn_out scales its input, as ours
        paths = [
            (mmap.proj(i, t, "ia3.targets").path, t) for i in method.layers for t in method.targets
        ]
        conv1d = model is not None and _conv1d(model, paths[0][0])
        return peft.IA3Config(
            target_modules=[p for p, _ in paths],
            feedforward_modules=[p for p, t in paths if t == "ffn_out"],
            fan_in_fan_out=conv1d,
        )
    projs = mmap.layers[0].projs
    targets = method.targets_in(projs)
    paths = _paths(mmap, targets, method.rank, f"{name}.targets")
    modules = [p for p, _ in paths]
    ranks = {re.escape(p): r for p, r in paths}
    first = paths[0][1]
    conv1d = model is not None and _conv1d(model, modules[0])
    if name == "lora":
        alphas = {re.escape(p): method.alpha_for(r) for p, r in paths}
        init = {"kaiming": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}
        return peft.LoraConfig(
            r=first,
            lora_alpha=alphas[re.escape(modules[0])],
            target_modules=modules,
            rank_pattern=ranks,
            alpha_pattern=alphas,
            lora_dropout=method.dropout,
            use_dora=method.variant == "dora",
            use_rslora=method.variant == "rslora",
            init_lora_weights=init[method.init],
            fan_in_fan_out=conv1d,
            bias="none",
        )
    o = method.options
    if name == "vera":
        return peft.VeraConfig(
            r=first,
            target_modules=modules,
            vera_dropout=o["dropout"],
            d_initial=o["d_initial"],
            save_projection=True,
            fan_in_fan_out=conv1d,
        )
    if name in ("loha", "lokr"):  # the LyCORIS pair: ranks and alphas per module
        common = {
            "r": first,
            "alpha": o["alpha_ratio"] * first,
            "target_modules": modules,
            "rank_pattern": ranks,
            "alpha_pattern": {k: o["alpha_ratio"] * r for k, r in ranks.items()},
        }
        if name == "loha":
            return peft.LoHaConfig(module_dropout=o["dropout"], **common)
        return peft.LoKrConfig(
            decompose_both=o["decompose_both"], decompose_factor=o["factor"], **common
        )
    # adalora: the schedule is set from the trial's step count when training starts
    return peft.AdaLoraConfig(
        init_r=first,
        target_r=o["target_rank"],
        lora_alpha=o["alpha_ratio"] * first,
        lora_dropout=o["dropout"],
        orth_reg_weight=o["orth_reg"],
        target_modules=modules,
        total_step=10**9,
        tinit=0,
        tfinal=0,
        deltaT=1,
        fan_in_fan_out=conv1d,
    )


def _conv1d(model: nn.Module, path: str) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(model.get_submodule(path), Conv1D)


def inject(model: nn.Module, mmap: ModelMap, spec: PeftSpec) -> None:
    """Inject ``spec`` with peft's tuner for its method; the tuner is kept on the model."""
    import warnings

    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    model.__dict__["autopeft_engine"] = "peft"
    if spec.methods == ("prompt",):  # prompt learning: peft's embedding and forward, no tuner
        from autopeft.peft.prompt import inject_prompt

        task = "SEQ_CLS" if mmap.head else None
        model.__dict__[PROMPT_CONFIG] = inject_prompt(model, spec["prompt"], task)
        return
    config = peft_config(spec, mmap, model)
    tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fan_in_fan_out" notes, "already a peft model"...
        tuner = tuner_cls(model, config, adapter_name=ADAPTER)
    model.__dict__[TUNER_ATTR] = tuner
    if spec["lora"].active and spec["lora"].init in CONVERTED:
        model.__dict__[INITIAL_ATTR] = {
            path: (
                module.lora_A[ADAPTER].weight.detach().to("cpu").clone(),
                module.lora_B[ADAPTER].weight.detach().to("cpu").clone(),
            )
            for path, module in model.named_modules()
            if hasattr(module, "lora_A") and ADAPTER in getattr(module, "lora_A", {})
        }


def initial_lora(model: nn.Module) -> dict[str, Any]:
    """``{module path: (A0, B0)}``: the initial adapter of a PiSSA / OLoRA LoRA, else {}."""
    return model.__dict__.get(INITIAL_ATTR, {})


def tuner_of(model: nn.Module) -> Any:
    return model.__dict__.get(TUNER_ATTR)


def prompt_config_of(model: nn.Module) -> Any:
    """peft's ``PromptTuningConfig`` of a prompt-tuned model, else None."""
    return model.__dict__.get(PROMPT_CONFIG)


def engine_of(model: nn.Module) -> str | None:
    return model.__dict__.get("autopeft_engine")


def has_peft_layers(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def adapter_names(model: nn.Module) -> tuple[str, ...]:
    """The adapter tensor names of the peft layers in ``model`` (``lora_A``, ``lora_magnitude_vector``,
    ``vera_lambda_b``, ``hada_w1_a``...); () on the own path."""
    if engine_of(model) != "peft":
        return ()
    from peft.tuners.tuners_utils import BaseTunerLayer

    names: set[str] = set()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            names.update(module.adapter_layer_names)
    return tuple(sorted(names))


class TrainingHooks:
    """What a training loop calls for a peft method that needs it (AdaLoRA); no-ops otherwise.

    ``begin(total_steps)`` before the first step; ``extra_loss()`` added to each batch's loss;
    ``after_step(step)`` after each optimiser step, before the gradients are zeroed."""

    def __init__(self, model: nn.Module):
        tuner = tuner_of(model)
        self.adalora = tuner if type(tuner).__name__ == "AdaLoraModel" else None
        # the P and Q matrices the orthogonality penalty reads: found once, not at every step
        self._pq = (
            [
                (name, p)
                for name, p in self.adalora.model.named_parameters()
                if ("lora_A" in name or "lora_B" in name) and ADAPTER in name and p.requires_grad
            ]
            if self.adalora is not None
            else []
        )

    @property
    def active(self) -> bool:
        return self.adalora is not None

    def begin(self, total_steps: int, warmup: float | None = None, final: float | None = None):
        if self.adalora is None:
            return
        spec = self.adalora.model.autopeft_spec["adalora"]
        warmup = spec.options["warmup"] if warmup is None else warmup
        final = spec.options["final"] if final is None else final
        config = self.adalora.peft_config[ADAPTER]
        config.total_step = max(1, int(total_steps))
        config.tinit = int(warmup * config.total_step)
        config.tfinal = int(final * config.total_step)
        if config.tinit >= config.total_step - config.tfinal:  # too few steps: prune at once
            config.tinit, config.tfinal = 0, 0

    def extra_loss(self):
        """AdaLoRA's orthogonality penalty on ``P`` and ``Q`` (as peft's ``AdaLoraModel.forward``)."""
        import torch

        if self.adalora is None:
            return 0.0
        weight = self.adalora.peft_config[ADAPTER].orth_reg_weight
        if not weight:
            return 0.0
        total = 0.0
        for name, p in self._pq:
            cov = p @ p.T if "lora_A" in name else p.T @ p
            eye = torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)
            total = total + torch.norm(cov - eye, p="fro")
        return weight * total / max(1, len(self._pq))

    def after_step(self, step: int) -> None:
        if self.adalora is not None:
            self.adalora.update_and_allocate(step)
