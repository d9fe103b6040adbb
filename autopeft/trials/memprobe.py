"""Measuring the peak training memory of a trial, to check the memory model against.

``measure_memory(workload, config)`` runs the real trainer's own steps (``PeftTrainer`` /
``CausalLmTrainer``: the model it builds, its optimiser groups, ``_train_step`` with clipping and the
scheduler, ``_evaluate``) on synthetic batches of exactly ``batch_size`` x ``max_length`` tokens
(padded rows of random lengths, one row full, like ``padding: "max_length"``), for a few optimiser
steps and one evaluation batch, and returns the peak of allocated tensor memory:

* on CUDA, ``torch.cuda.max_memory_allocated`` (what a GPU trial reports as ``peak_memory_mb``);
* on the CPU, the bytes resident when the model is built (every parameter and buffer) plus the highest
  running total of the CPU allocator's allocations and frees that torch's profiler records
  (``profile_memory=True``) over the steps: the same quantity, counted by the allocator rather than
  sampled.

Used by ``benchmarks/memory_model.py`` and the tests of :mod:`autopeft.trials.memory`; not on a
trial's path (profiling slows a step down several times).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autopeft.trials.context import TrialContext


@dataclass(frozen=True)
class MeasuredMemory:
    """``peak``: bytes; ``resident``: parameters and buffers when the model was built; ``device``."""

    peak: int
    resident: int
    device: str

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def allocation_peak(fn) -> int:
    """Highest running total (bytes) of CPU tensor allocations minus frees while ``fn()`` runs."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.typed[0] == _EventType.Allocation:
            events.append((node.start_time_ns, int(node.typed[1].alloc_size)))
        stack.extend(node.children)
    events.sort()
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return peak


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct storages of ``model``'s parameters and buffers (tied weights once)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def synthetic_tokens(trainer, n: int, vocab: int, seed: int = 0):
    """``n`` examples of random token ids, lengths between half and all of ``max_length`` (example 0
    full), in the trainer's data format (classification: 3 labels; causal_lm: the last quarter of each
    example, at least one token, is its completion)."""
    from autopeft.trials import data, sft_data

    length = trainer.knobs["max_length"]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, length // 2), length + 1, size=n)
    lengths[0] = length
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(min(100, vocab - 1), vocab, size=int(offsets[-1])).astype(np.int64)
    labels = (np.arange(n) % 3).astype(np.int64)
    if trainer.workload.get("task") == "causal_lm":
        prompt = np.maximum(1, lengths - np.maximum(1, lengths // 4))
        return sft_data.SftData(
            ids, offsets, prompt.astype(np.int64), labels, ("a", "b", "c"), 0, "synthetic"
        )
    return data.TokenizedData(ids, offsets, None, labels, ("a", "b", "c"), 0, "synthetic")


def measure_memory(
    workload: dict[str, Any],
    config: dict[str, Any],
    *,
    steps: int = 2,
    trial: TrialContext | None = None,
) -> MeasuredMemory:
    """Peak memory of ``steps`` training steps and one evaluation batch of the trial (module doc).
    ``workload`` must set ``batch_size``; the device is the trainer's (``workload.device``)."""
    from autopeft.trials.optimizer import lr_lambda
    from autopeft.trials.train import trainer_for

    trainer = trainer_for(workload, config, trial or TrialContext("memprobe"))
    bs = trainer.knobs["batch_size"]
    if bs is None:
        raise ValueError("measure_memory needs workload.batch_size")
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    model = trainer.build_model(3, ("a", "b", "c"))
    vocab = int(model.get_input_embeddings().num_embeddings)
    ebs = trainer.knobs["eval_batch_size"]
    tokens = synthetic_tokens(trainer, max(bs * steps, ebs), vocab)
    resident = resident_bytes(model)
    optimizer = trainer._optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda("constant", 0, steps))
    scaler = torch.amp.GradScaler("cuda") if trainer.precision == "fp16" else None
    autocast = trainer._autocast()
    pad_to = trainer.knobs["max_length"]

    def run() -> None:
        model.train()
        for s in range(steps):
            rows = np.arange(s * bs, (s + 1) * bs) % len(tokens)
            trainer._train_step(model, optimizer, scheduler, scaler, tokens, rows, pad_to, autocast)
        trainer._evaluate(model, tokens, np.arange(ebs) % len(tokens), pad_to, 3, autocast)

    if trainer.device.type == "cuda":
        run()
        torch.cuda.synchronize(trainer.device)
        return MeasuredMemory(
            int(torch.cuda.max_memory_allocated(trainer.device)), resident, "cuda"
        )
    return MeasuredMemory(resident + allocation_peak(run), resident, "cpu")
