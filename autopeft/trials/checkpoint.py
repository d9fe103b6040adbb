"""Adapter-only checkpoints: what it takes to continue a trial exactly where it stopped.

A checkpoint folder holds

* ``trainable.safetensors``: the trainable parameters only (PEFT modules and task
  head; every weight under full fine-tuning), by parameter name;
* ``training_state.pt``: optimiser, scheduler and grad-scaler states, RNG states
  (torch, CUDA, numpy, python), the number of completed epochs and optimiser steps, the
  training-set size and budget fraction it was trained with, the trainable names in the
  optimiser's order;
* ``meta.json`` (written last): a human-readable summary (epoch, metrics history,
  config), also the marker that the checkpoint is complete.

Files are written under temporary names and renamed into place, so a reader never sees
half a checkpoint; ``meta.json`` names the epoch of the files it belongs to.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from autopeft.errors import InvalidConfig

FORMAT = 1
WEIGHTS = "trainable.safetensors"
STATE = "training_state.pt"
META = "meta.json"


@dataclass
class TrainingState:
    """What a restored checkpoint hands back to the training loop."""

    epoch: int  # completed epochs
    step: int  # optimiser steps taken
    train_size: int  # examples per epoch it was trained with
    fraction: float  # budget fraction it was trained with
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    report: int = 0  # reports (evaluations) made so far


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(
    directory: str | Path,
    model: torch.nn.Module,
    state: TrainingState,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model``'s trainable parameters plus ``state`` (``extra``: more
    fields of ``meta.json``, e.g. the pooling the head reads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = trainable_names(model)
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().to("cpu").contiguous().clone() for n in names}
    _atomic(
        directory / WEIGHTS,
        lambda tmp: save_file(
            tensors,
            tmp,
            metadata={"format": str(FORMAT), "epoch": str(state.epoch), "step": str(state.step)},
        ),
    )
    position = {  # where training stands: in both the state and meta.json
        "format": FORMAT,
        "epoch": state.epoch,
        "step": state.step,
        "report": state.report,
        "train_size": state.train_size,
        "fraction": state.fraction,
    }
    payload = {
        **position,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "scaler": state.scaler,
        "rng": state.rng,
        "names": names,
    }
    _atomic(directory / STATE, lambda tmp: torch.save(payload, tmp))
    meta = {
        **(extra or {}),
        **position,
        # who injected the PEFT modules (their tensor names differ): a rebuild injects the same way
        "engine": model.__dict__.get("autopeft_engine") or "own",
        "trainable_params": int(sum(t.numel() for t in tensors.values())),
        "history": state.history,
        "config": config,
    }
    _atomic(
        directory / META,
        lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8"),
    )
    return directory


def exists(directory: str | Path | None) -> bool:
    return directory is not None and (Path(directory) / META).is_file()


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's ``meta.json`` (epoch, step, report, history, config, ...)."""
    return json.loads((Path(directory) / META).read_text(encoding="utf-8"))


def is_consistent(directory: str | Path) -> bool:
    """The three files belong to one save (a copy taken during a rewrite may mix two)."""
    directory = Path(directory)
    try:
        meta = read_meta(directory)
        payload = torch.load(directory / STATE, map_location="cpu", weights_only=True)
        from safetensors import safe_open

        with safe_open(str(directory / WEIGHTS), "pt") as f:
            weights_step = (f.metadata() or {}).get("step")
    except (OSError, ValueError, RuntimeError, KeyError):
        return False
    return payload.get("step") == meta.get("step") and weights_step in (None, str(meta.get("step")))


def load(directory: str | Path, model: torch.nn.Module) -> TrainingState:
    """Load trainable parameters into ``model`` and return the rest of the state.

    Raises ``InvalidConfig`` when the checkpoint's trainable parameters do not match the
    model's (a config with a different PEFT structure than the checkpoint's).
    """
    directory = Path(directory)
    if not exists(directory):
        raise InvalidConfig(f"no checkpoint in {directory} (no {META})", field="restore_dir")
    meta = read_meta(directory)
    payload = torch.load(directory / STATE, map_location="cpu", weights_only=True)
    if payload.get("step") != meta.get("step"):
        raise InvalidConfig(
            f"checkpoint in {directory} is inconsistent (a write was "
            f"interrupted): {META} says step {meta.get('step')}, {STATE} "
            f"{payload.get('step')}",
            field="restore_dir",
        )
    tensors = load_file(directory / WEIGHTS)
    names = trainable_names(model)
    if set(names) != set(tensors) or names != payload["names"]:
        missing = sorted(set(names) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(names))[:3]
        raise InvalidConfig(
            f"checkpoint in {directory} does not match this trial's trainable "
            f"parameters (missing {missing}, unexpected {extra}); PEFT "
            f"structure must not change across a restore",
            field="restore_dir",
        )
    params = dict(model.named_parameters())
    for name in names:
        if params[name].shape != tensors[name].shape:
            raise InvalidConfig(
                f"checkpoint in {directory} does not match this trial's "
                f"parameters: {name} has shape {tuple(tensors[name].shape)}"
                f" there, {tuple(params[name].shape)} here",
                field="restore_dir",
            )
    with torch.no_grad():
        for name in names:
            params[name].copy_(tensors[name])
    return TrainingState(
        epoch=int(payload["epoch"]),
        step=int(payload["step"]),
        train_size=int(payload["train_size"]),
        fraction=float(payload["fraction"]),
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        scaler=payload["scaler"],
        rng=payload["rng"],
        history=list(meta.get("history", [])),
        report=int(payload.get("report", payload["epoch"])),
    )
