"""Turning a trial's training checkpoint into an exported adapter (``trials/{id}/adapter``).

A peft trial's checkpoint holds only the trainable tensors plus training state; the first
export request rebuilds the model (base weights from the local model folder, the config's
PEFT modules), loads those tensors and writes ``autopeft.export_adapter``'s folder into
``<trial dir>/adapter`` (a ``peft.PeftModel``-loadable adapter when the config is expressible
in peft, the project's own format otherwise). Later requests serve that folder. Python
workloads that wrote their own ``adapter/`` or checkpoint are served as written.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_HEAD_SUFFIXES = ("classifier.weight", "classifier.out_proj.weight", "score.weight")


def ensure_peft_adapter(
    spec: dict[str, Any], config: dict[str, Any], trial_id: int, root: Path
) -> Path | None:
    """``root/adapter`` for a peft trial with a checkpoint (built on first use), else None."""
    adapter = root / "adapter"
    ckpt = root / "checkpoint"
    workload = spec.get("workload") or {}
    if adapter.is_dir() and any(adapter.iterdir()):
        return adapter
    if workload.get("kind") != "peft" or not (ckpt / "meta.json").is_file():
        return None
    with _lock:
        if adapter.is_dir() and any(adapter.iterdir()):
            return adapter
        from safetensors import safe_open

        import autopeft
        from autopeft.trials import TrialContext, checkpoint
        from autopeft.trials.train import trainer_for

        with safe_open(str(ckpt / checkpoint.WEIGHTS), "pt") as f:
            heads = [f.get_slice(k).get_shape()[0] for k in f.keys() if k.endswith(_HEAD_SUFFIXES)]  # noqa: SIM118 (safe_open has no __iter__)
        labels = list(workload.get("labels") or [])
        if not labels:
            from autopeft.trials.data import BUILTIN_DATASETS

            if workload.get("dataset") in BUILTIN_DATASETS:
                labels = list(BUILTIN_DATASETS[workload["dataset"]]().labels or [])
        num_labels = heads[0] if heads else (len(labels) or 2)
        if len(labels) != num_labels:
            labels = [f"LABEL_{i}" for i in range(num_labels)]
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        config = dict(meta.get("config") or config)
        # a 4-bit trial's adapter is exported on the full-precision base (what QLoRA adapters load onto)
        # the path that injected the trial (checkpoints from before peft injected LoRA: "own")
        engine = meta.get("engine", "own") if not workload.get("full_finetune") else "auto"
        trainer = trainer_for(
            {**workload, "quantization": None, "peft_engine": engine},
            config,
            TrialContext(trial_id=trial_id, resources={"cpus": 1, "gpus": 0}),
        )
        model = trainer.build_model(num_labels, tuple(str(x) for x in labels)).to("cpu")
        checkpoint.load(ckpt, model)
        tmp = root / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        autopeft.export_adapter(model, config, tmp)
        tmp.rename(adapter)
        return adapter
