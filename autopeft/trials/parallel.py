"""A trial's share of a data-parallel gang (``workload.resources.workers > 1``).

The Ray executor runs such a trial on Ray Train (``TorchTrainer``): one process per worker, the
process group set up by Ray Train (``gloo`` on CPUs, ``nccl`` on GPUs), every worker running the
same trainer loop (``autopeft.trials.train``). What changes in the loop is here:

* **The same global batch.** Every optimiser step reads the global batch the single-process
  trial reads (``batch_size`` rows of the epoch's order); worker ``r`` of ``n`` takes rows
  ``r, r + n, ...`` of it. Its mean loss is scaled by ``t_local * n / t_global``, where ``t`` counts
  the terms the mean loss averages (examples; completion tokens for the causal-LM task; summed
  over the gang by one all-reduce of a scalar), so that DDP's average of the workers' gradients is
  the gradient of the global batch's mean loss, also when the batch does not split evenly (a
  worker left without a row runs one row with weight 0, so every worker takes part in every
  all-reduce).
* **Gradients** are averaged by ``torch.nn.parallel.DistributedDataParallel``; the optimiser,
  clipping and schedule then run on equal gradients on every worker, so the replicas stay equal.
* **One voice.** Only rank 0 evaluates, saves checkpoints and reports; its decision (go on or stop)
  is broadcast, so every worker stops at the same step. The training loss it reports is the mean
  over the global batches since the last report (summed across workers).

Without an initialised process group (the usual single-process trial) every method is the
identity: ``shard`` returns the batch, ``wrap`` the model, ``agree`` its argument.

Equivalence: with dropout off, a 2-worker trial's losses equal the 1-worker trial's up to
floating-point summation order (``tests/workers/test_data_parallel.py``). With dropout on they
differ as two seeds do: each worker draws its own masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class DataParallel:
    """This process's rank in the trial's gang (see the module docstring)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.on = bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    @property
    def main(self) -> bool:
        """Rank 0: evaluates, checkpoints and reports."""
        return self.rank == 0

    def shard(self, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        """``(this worker's rows of the global batch, whether they count)``: a worker left without
        a row (fewer rows than workers) gets one row that does not count (weight 0)."""
        if not self.on:
            return rows, True
        local = rows[self.rank :: self.world]
        if len(local) == 0:
            return rows[:1], False
        return local, True

    def scale(self, terms: float, device: torch.device | None = None) -> float:
        """The factor of this worker's mean loss over ``terms`` loss terms: ``terms * n / total``
        (the gang's terms summed), so that DDP's mean of the gradients is the global mean's."""
        if not self.on:
            return 1.0
        (total,) = self.sum(terms, device=device)
        return float(terms) * self.world / total

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train through: ``model`` under DDP in a gang, else ``model`` itself.
        Evaluation, checkpoints and hooks keep using ``model``."""
        if not self.on:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if device.type != "cuda":
            return DistributedDataParallel(model)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index])

    def sum(self, *values: Any, device: torch.device | None = None) -> list[float]:
        """The sums of ``values`` over the gang (floats or 0-d tensors)."""
        if not self.on:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        self._dist.all_reduce(t)
        return t.tolist()

    def agree(self, flag: bool, device: torch.device | None = None) -> bool:
        """Rank 0's ``flag`` on every worker."""
        if not self.on:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        self._dist.broadcast(t, src=0)
        return bool(t.item())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model)."""
    return (
        getattr(model, "module", model) if type(model).__name__.endswith("DataParallel") else model
    )


def per_worker(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload as one worker of its gang sees its memory: a batch of ``ceil(batch / workers)``
    rows (the memory model's default batch when the workload leaves it to the trainer). The
    workload itself when it is not data-parallel."""
    workers = int((workload.get("resources") or {}).get("workers") or 1)
    if workers <= 1:
        return workload
    from autopeft.peft.memory import DEFAULT_PREDICTION_BATCH

    batch = int(workload.get("batch_size") or DEFAULT_PREDICTION_BATCH)
    return {**workload, "batch_size": -(-batch // workers)}
