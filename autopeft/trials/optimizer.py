"""The optimiser and learning-rate schedule of a peft run: AdamW over named parameter groups
(``decay``, ``no_decay``, ``head``, ``head_no_decay``, and ``plus``: LoRA's ``B`` matrices, which
train at ``lora.plus_ratio`` times the rate, LoRA+), an HF-style warmup + decay schedule, one
optimiser step (gradient scaling, clipping), and the current config's rates applied to a restored
optimiser."""

from __future__ import annotations

import math

import torch

from autopeft.errors import InvalidConfig


def lr_lambda(kind: str, warmup_steps: int, total_steps: int):
    """Multiplier of the base lr after ``step`` optimiser steps (HF-style schedules)."""

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def build_optimizer(
    model: torch.nn.Module, lrs: dict[str, float], weight_decay: float, lr: float, foreach: bool
) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters, one group a name of ``lrs`` that has any: the
    task head's (its modules per ``map_model``) apart; biases, norms and other 1-d parameters
    without weight decay. ``InvalidConfig`` when nothing is trainable."""
    from autopeft.peft.modelmap import map_model

    try:
        head = tuple(f"{h}." for h in map_model(model).head)
    except InvalidConfig:
        head = ()
    buckets: dict[str, list] = {
        "decay": [],
        "no_decay": [],
        "head": [],
        "head_no_decay": [],
        "plus": [],
    }
    for name, p in model.named_parameters():
        if p.requires_grad:
            no_decay = p.ndim < 2 or "norm" in name.lower()
            prefix = "head" if name.startswith(head) else ""
            key = (
                (prefix + ("_no_decay" if no_decay else ""))
                if prefix
                else ("no_decay" if no_decay else "decay")
            )
            if key == "decay" and "plus" in lrs and "lora_B" in name.split("."):
                key = "plus"
            buckets[key].append(p)
    if not any(buckets.values()):
        raise InvalidConfig("the config leaves no trainable parameter", field="config")
    groups = [
        {
            "params": params,
            "lr": lrs[name],
            "name": name,
            "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay,
        }
        for name, params in buckets.items()
        if params
    ]
    # Parameter order = named_parameters order = checkpoint.trainable_names order.
    return torch.optim.AdamW(groups, lr=lr, foreach=foreach)


def optimizer_step(model, optimizer, scheduler, scaler, clip: float, after_step=None) -> None:
    """Unscale (fp16), clip the gradient norm to ``clip`` (0: no clipping), step the optimiser,
    call ``after_step(step)`` (the 0-based index of this step; AdaLoRA's rank allocation reads the
    gradients), step the schedule, zero the gradients."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if after_step is not None:
        after_step(scheduler.last_epoch)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def apply_lrs(optimizer, scheduler, lrs: dict[str, float], weight_decay: float) -> None:
    """Set every group's learning rate to ``lrs[group]`` times the schedule's current factor (and
    the decayed groups' weight decay): a restored optimiser takes the current config's rates."""
    scheduler.base_lrs = [lrs[g["name"]] for g in optimizer.param_groups]
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["initial_lr"] = lrs[group["name"]]
        group["lr"] = lrs[group["name"]] * factor
        if group["name"] in ("decay", "head", "plus"):
            group["weight_decay"] = weight_decay
