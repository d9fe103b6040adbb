"""Shared fixtures for optimiser tests: small mixed / conditional / per-layer spaces."""

from __future__ import annotations

import pytest

from autopeft.space import SearchSpace

#: per-optimiser options that keep the contract tests fast (BO after 4 trials, tiny pools)
FAST_OPTIONS = {
    "mobo": {
        "n_initial": 4,
        "pool_size": 48,
        "mc_samples": 16,
        "local_search_starts": 2,
        "local_search_steps": 1,
        "fit_maxiter": 15,
        "raw_samples": 32,
        "num_restarts": 2,
    },
    "tpe": {"n_startup_trials": 3},
    "nsga2": {"population_size": 4},
    "gp": {"n_startup_trials": 3},
    "pbt": {"population_size": 4, "perturbation_interval": 1},
    "mopbt": {"population_size": 4, "perturbation_interval": 1},
}

MIXED = {
    "params": {
        "lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 4},
        "sched": {"type": "categorical", "choices": ["linear", "cosine"]},
        "warmup": {"type": "float", "low": 0.0, "high": 0.2, "active_if": {"sched": "linear"}},
        "dropout": {"choices": [0.0, 0.1, 0.2]},
        "batch_size": 32,
    },
    "peft": {
        "layers": {"search": True},
        "lora": {"targets": "q,v", "rank": {"choices": [0, 2, 4, 8], "per_layer": True}},
    },
}


@pytest.fixture
def mixed_space() -> SearchSpace:
    return SearchSpace.from_dict(MIXED, num_layers=3)


def lora_params(config: dict) -> float:
    """Exact trainable parameters of LoRA on q,v of a hidden-64 model: 2 targets x r x (64 + 64)."""
    total = 0
    for i in range(64):
        if config.get(f"layers.{i}", True) and f"lora.rank.{i}" in config:
            total += 2 * config[f"lora.rank.{i}"] * 128
    return float(total)


def toy_values(config: dict) -> dict:
    """A deterministic two-objective toy: accuracy (maximise) and parameters (minimise)."""
    import math

    acc = 1.0 - abs(math.log10(config["lr"]) + 3.0) / 3.0 + 0.02 * config["epochs"]
    acc += 0.01 * sum(v for k, v in config.items() if k.startswith("lora.rank."))
    return {"accuracy": acc, "params": lora_params(config)}
