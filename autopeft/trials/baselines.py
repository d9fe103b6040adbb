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
  0.720 against 0.700 at 5e-5, one epoch of 1,500 tweets).

Learning rates were picked from the measurements in BENCHMARKS.md ("Trial defaults").
"""

from __future__ import annotations

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
}
#: what the demo and ``"baselines": "default"`` run: the cheapest sensible point and the usual pick
DEFAULT_BASELINES = ("linear_probe", "lora_r8")
#: what a peft study that does not mention baselines runs: the linear probe costs a third of an
#: epoch and anchors the cheap end of the front (a searched head-only config trains it by SGD,
#: which does worse: BENCHMARKS.md); ``"baselines": []`` turns it off
IMPLICIT_BASELINES = ("linear_probe",)


#: baselines that train a classification head: not for the causal_lm task (it has none)
HEAD_ONLY = ("linear_probe",)


def check_baselines(names: Any, workload: dict[str, Any]) -> list[str]:
    """The study's baseline names (``"default"`` expands; not given: :data:`IMPLICIT_BASELINES` for
    a peft classification workload, none otherwise), or ``InvalidConfig`` naming ``baselines``.
    A causal_lm workload has no head to probe: ``"default"`` is LoRA r8 alone and
    ``linear_probe`` is refused."""
    causal = workload.get("task") == "causal_lm"
    if names is None:
        return list(IMPLICIT_BASELINES) if workload.get("kind") == "peft" and not causal else []
    if names == "default":
        names = [n for n in DEFAULT_BASELINES if not (causal and n in HEAD_ONLY)]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidConfig(
            f"baselines must be a list of names ({', '.join(BASELINES)}) or 'default', got "
            f"{names!r}",
            "baselines",
        )
    for i, name in enumerate(names):
        if name not in BASELINES:
            raise InvalidConfig(
                f"unknown baseline {name!r}; known: {', '.join(BASELINES)}", f"baselines.{i}"
            )
    if len(set(names)) != len(names):
        raise InvalidConfig("each baseline may be named once", "baselines")
    if names and workload.get("kind") != "peft":
        raise InvalidConfig(
            "baselines are fine-tuning reference points: they need a peft workload", "baselines"
        )
    for i, name in enumerate(names):
        if causal and name in HEAD_ONLY:
            raise InvalidConfig(
                f"{name} fits a classification head; a causal_lm workload has none",
                f"baselines.{i}",
            )
    return list(names)


def baseline_trial(name: str, workload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, workload)`` to run baseline ``name`` on the study's ``workload``."""
    config, overrides = BASELINES[name]
    return dict(config), {**workload, **overrides}
