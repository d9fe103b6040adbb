"""Python workloads for the dashboard tests (run in the server's trial processes).

``arch`` scores a per-layer PEFT config without any model: "trainable_params" grows with the
sizes the config switches on, "accuracy" saturates with them (with a deterministic wobble per
config), and a third objective "latency_ms" exists for the 3-objective study. It reports a
short learning curve and writes a small checkpoint so the adapter export has something to zip.
``gated`` does the same but first waits for the file named by ``AUTOPEFT_DASH_GATE``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

SIZES = ("lora.rank", "serial.size", "parallel.size", "prefix.length")


def _capacity(config: dict) -> float:
    layers = sorted(
        {int(k.rsplit(".", 1)[1]) for k in config if k.startswith(("lora.rank.", "layers."))}
    ) or [0]
    total = 0.0
    for i in layers:
        if config.get(f"layers.{i}", True) is False:
            continue
        for key in SIZES:
            total += float(config.get(f"{key}.{i}", config.get(key, 0)) or 0)
    return total


def metrics(config: dict) -> dict[str, float]:
    cap = _capacity(config)
    wobble = (
        int(hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8], 16) / 16**8
    )
    accuracy = 0.55 + 0.4 * (1 - math.exp(-cap / 60)) - 0.08 * wobble
    return {
        "accuracy": round(accuracy, 6),
        "trainable_params": float(int(cap * 1536 + 1538)),
        "latency_ms": round(10 + cap * 0.05 + 3 * (1 - wobble), 4),
    }


def _run(config, trial):
    final = metrics(config)
    for step in range(4):
        frac = (step + 1) / 4
        if not trial.report(
            step,
            {
                "loss": round(1.2 - frac * (final["accuracy"] - 0.3), 6),
                "accuracy": round(final["accuracy"] * (0.7 + 0.3 * frac), 6),
            },
        ):
            break
    folder = Path(trial.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "autopeft_config.json").write_text(json.dumps({"config": config}))
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
    return final


def arch(config, trial):
    return _run(config, trial)


def gated(config, trial):
    gate = Path(os.environ["AUTOPEFT_DASH_GATE"])
    deadline = time.monotonic() + 120
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never opened the gate {gate}")
        time.sleep(0.05)
    return _run(config, trial)


def pbt_arch(config, trial):
    """Twelve reported steps of ~0.15 s (all objectives each time) for PBT: long enough for the
    population to overlap, so exploits happen; checkpoints its step so an exploited trial
    continues from the donor's step."""
    final = metrics(config)
    folder = Path(trial.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    if trial.restore_dir and (Path(trial.restore_dir) / "state.json").is_file():
        start = json.loads((Path(trial.restore_dir) / "state.json").read_text())["step"] + 1
    values = dict(final)
    for step in range(start, 12):
        time.sleep(0.15)
        values = dict(final, accuracy=round(final["accuracy"] * (0.5 + step / 22), 6))
        (folder / "state.json").write_text(json.dumps({"step": step}))
        if not trial.report(step, values):
            break
    return values


def slow(config, trial):
    """Up to a minute of small steps; ends early when the controller says stop."""
    for step in range(1200):
        time.sleep(0.05)
        if step % 5 == 0 and not trial.report(step, {"accuracy": step / 1200}):
            break
    return metrics(config)
