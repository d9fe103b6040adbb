"""Hand-picked reference points a study runs beside its search (``"baselines": [...]``).

Each baseline is a fixed config plus workload overrides, what a user would otherwise pick by
hand. They run on the study's workload (same model, data, splits, epochs and fidelity), count
in its budget, are evaluated on the held-out test split like the front, and are marked in
``/pareto`` and on the dashboard, so a user sees what the search bought over the obvious
choices. They are never told to the optimiser (they may lie outside its space).

* ``linear_probe``: the head alone, fitted on frozen features (``autopeft.trials.probe``);
* ``lora_r4`` / ``lora_r8`` / ``lora_r16``: LoRA of that rank on q and v of every layer,
  alpha = 2 x rank, lr 2e-3 (the lr measured best for one epoch of LoRA r8 here);
* ``mam``: the "unified view" point (He et al. 2022): a parallel adapter beside the FFN
  (size 64, scaling 4) plus prefix-tuning (16 per layer), lr 1e-3;
* ``full_finetune``: every weight, lr 1e-4 (the accuracy anchor; its cost is the whole model;
  0.720 against 0.700 at 5e-5, one epoch of 1,500 tweets);
* ``dora_r8``: ``lora_r8`` as DoRA (peft's weight-decomposed LoRA: a trained magnitude per output
  feature of q and v besides A and B), lr 2e-3;
* ``adalora``: what a user runs instead of searching per-layer ranks: AdaLoRA (peft) on q and v
  of every layer, starting at rank 12 and pruned during training to an average rank of 8, i.e.
  the rank budget of ``lora_r8`` (its trained tensors hold rank 12 plus the singular values;
  the pruned ones are held at zero), alpha = 2 x rank, orthogonality weight 0.5, pruning from
  10% to 80% of the steps (peft's schedule), lr 2e-3.

A user's own reference point (the config they would otherwise ship) is an entry
``{"name": "...", "config": {...}}``: a flat config of PEFT keys and training knobs
(``docs/config_format.md``), checked when the study is created against the workload's model,
run and marked like the built-in ones.

Learning rates were picked from the measurements in BENCHMARKS.md ("Trial defaults").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from autopeft.errors import InvalidConfig


def _lora(rank: int) -> dict[str, Any]:
    return {
        "lora.rank": rank,
        "lora.targets": "q,v",
        "lora.alpha_ratio": 2.0,
        "lora.dropout": 0.0,
        "lr": 2e-3,
    }


#: name -> (config, workload overrides)
BASELINES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "linear_probe": ({}, {"linear_probe": True}),
    "lora_r4": (_lora(4), {}),
    "lora_r8": (_lora(8), {}),
    "lora_r16": (_lora(16), {}),
    "mam": (
        {
            "parallel.size": 64,
            "parallel.scaling": 4.0,
            "prefix.length": 16,
            "prefix.reparam": 0,
            "lr": 1e-3,
        },
        {},
    ),
    "full_finetune": ({"lr": 1e-4}, {"full_finetune": True}),
    "dora_r8": ({**_lora(8), "lora.variant": "dora"}, {}),
    "adalora": (
        {
            "adalora.rank": 12,
            "adalora.target_rank": 8,
            "adalora.targets": "q,v",
            "adalora.alpha_ratio": 2.0,
            "lr": 2e-3,
        },
        {},
    ),
}
#: what the demo and ``"baselines": "default"`` run: the cheapest sensible point and the usual pick
DEFAULT_BASELINES = ("linear_probe", "lora_r8")
#: what a peft study that does not mention baselines runs: the linear probe costs a third of an
#: epoch and anchors the cheap end of the front (a searched head-only config trains it by SGD,
#: which does worse: BENCHMARKS.md); ``"baselines": []`` turns it off
IMPLICIT_BASELINES = ("linear_probe",)


#: baselines that train a classification head: not for the causal_lm task (it has none)
HEAD_ONLY = ("linear_probe",)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: the keys of a user's own baseline entry
CUSTOM_KEYS = ("name", "config")


def baseline_name(entry: str | Mapping[str, Any]) -> str:
    """The label of a (normalised) baseline entry: a built-in name or a custom entry's name."""
    return entry if isinstance(entry, str) else entry["name"]


def check_baselines(
    names: Any, workload: dict[str, Any], model_config: Any = None
) -> list[str | dict[str, Any]]:
    """The study's baselines, normalised (``"default"`` expands; not given:
    :data:`IMPLICIT_BASELINES` for a peft classification workload, none otherwise): built-in
    names, and a user's own points as ``{"name", "config"}`` (the config checked against
    ``model_config``, the workload's model, when given). Raises ``InvalidConfig`` naming
    ``baselines`` or the entry's field. A causal_lm workload has no head to probe:
    ``"default"`` is LoRA r8 alone and ``linear_probe`` is refused."""
    causal = workload.get("task") == "causal_lm"
    if names is None:
        return list(IMPLICIT_BASELINES) if workload.get("kind") == "peft" and not causal else []
    if names == "default":
        names = [n for n in DEFAULT_BASELINES if not (causal and n in HEAD_ONLY)]
    if not isinstance(names, list) or not all(isinstance(n, (str, Mapping)) for n in names):
        raise InvalidConfig(
            f"baselines must be a list of names ({', '.join(BASELINES)}) or of your own points "
            f"{{name, config}}, or 'default', got {names!r}",
            "baselines",
        )
    out: list[str | dict[str, Any]] = []
    for i, entry in enumerate(names):
        if isinstance(entry, Mapping):
            out.append(_check_custom(entry, f"baselines.{i}", model_config))
        elif entry not in BASELINES:
            raise InvalidConfig(
                f"unknown baseline {entry!r}; known: {', '.join(BASELINES)} (or give your own as "
                "{name, config})",
                f"baselines.{i}",
            )
        else:
            _check_builtin(entry, f"baselines.{i}", model_config)
            out.append(entry)
    labels = [baseline_name(e) for e in out]
    if len(set(labels)) != len(labels):
        raise InvalidConfig("each baseline may be named once", "baselines")
    if out and workload.get("kind") != "peft":
        raise InvalidConfig(
            "baselines are fine-tuning reference points: they need a peft workload", "baselines"
        )
    for i, name in enumerate(out):
        if causal and name in HEAD_ONLY:
            raise InvalidConfig(
                f"{name} fits a classification head; a causal_lm workload has none",
                f"baselines.{i}",
            )
    return out


def _check_builtin(name: str, field: str, model_config: Any) -> None:
    """A built-in baseline the workload's model cannot take (DoRA or AdaLoRA on GPT-2's fused
    q/k/v) is refused at creation, naming the entry, not when its trial runs."""
    config, overrides = BASELINES[name]
    if model_config is None or overrides.get("full_finetune") or not config:
        return
    from autopeft.peft.cost import count_trainable

    try:
        count_trainable(config, model_config)
    except InvalidConfig as err:
        raise InvalidConfig(
            f"baseline {name!r} does not fit this model: {err.message}", field
        ) from None


def _check_custom(entry: Mapping[str, Any], field: str, model_config: Any) -> dict[str, Any]:
    """A user's own baseline ``{name, config}``, checked: a fresh label, and a config whose keys
    are PEFT keys (values and layer indices checked for the model) or training knobs."""
    from autopeft.peft.config import parse_peft_config
    from autopeft.peft.registry import check_peft_value, is_peft_key
    from autopeft.trials.knobs import KNOB_ALIASES, KNOBS, checked_knobs

    extra = sorted(set(map(str, entry)) - set(CUSTOM_KEYS))
    if extra:
        raise InvalidConfig(
            f"unknown key {extra[0]!r}; a baseline of your own has: {', '.join(CUSTOM_KEYS)}",
            f"{field}.{extra[0]}",
        )
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidConfig(
            f"must be 1-64 letters, digits, '_', '.' or '-', got {name!r}", f"{field}.name"
        )
    if name in BASELINES:
        raise InvalidConfig(
            f"{name!r} is a built-in baseline: name it alone, or give yours another name",
            f"{field}.name",
        )
    config = entry.get("config")
    if not isinstance(config, Mapping):
        raise InvalidConfig(
            f"must be a flat config (parameter -> value), got {type(config).__name__}",
            f"{field}.config",
        )
    for key in config:
        if (
            isinstance(key, str)
            and not is_peft_key(key)
            and KNOB_ALIASES.get(key, key) not in KNOBS
        ):
            raise InvalidConfig(
                f"unknown parameter {key!r}: a PEFT key (docs/config_format.md) or a training "
                f"knob ({', '.join(KNOBS)})",
                f"{field}.config.{key}",
            )
    checked_knobs(config, f"{field}.config.")
    try:
        if model_config is None:  # no model to read: values checked, layer indices not
            for key, value in config.items():
                if is_peft_key(key):
                    check_peft_value(key, value)
        else:
            from autopeft.peft.arch import describe_config

            parse_peft_config(config, describe_config(model_config).num_layers)
    except InvalidConfig as err:
        raise InvalidConfig(err.message, f"{field}.config.{err.field or ''}".rstrip(".")) from None
    return {"name": name, "config": dict(config)}


def baseline_trial(
    name: str, workload: dict[str, Any], baselines: list[Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, workload)`` to run baseline ``name`` on the study's ``workload``: a built-in
    one, or the user's own entry of that name in the study's ``baselines``."""
    for entry in baselines or []:
        if isinstance(entry, Mapping) and entry["name"] == name:
            return dict(entry["config"]), dict(workload)
    config, overrides = BASELINES[name]
    return dict(config), {**workload, **overrides}
