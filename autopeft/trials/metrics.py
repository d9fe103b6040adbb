"""What a peft run measures: the classifier's task metrics, the cost metrics every run ends with,
and the counters they come from (phase timings, peak RSS)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Timings:
    """Phase counters of one run, in seconds (``steps``, ``*_examples``: counts).

    ``forward_s`` / ``backward_s`` / ``optimizer_s`` cover training steps (``optimizer_s``
    includes clipping, the scheduler step and zeroing grads); ``eval_forward_s`` the
    evaluation forward passes. Everything else in ``total_s`` is the harness: set-up
    (``setup_s``: tokenizer, data, model, apply_peft, restore), batching and device
    transfer (``data_s``), metrics, checkpoints (``checkpoint_s``), reports
    (``report_s``). On CUDA the phases are synchronised only when the trainer's
    ``profile`` is set.
    """

    setup_s: float = 0.0
    data_prep_s: float = 0.0
    model_s: float = 0.0
    data_s: float = 0.0
    forward_s: float = 0.0
    backward_s: float = 0.0
    optimizer_s: float = 0.0
    eval_s: float = 0.0
    eval_forward_s: float = 0.0
    checkpoint_s: float = 0.0
    report_s: float = 0.0
    train_s: float = 0.0
    total_s: float = 0.0
    steps: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    cache_hit: bool = False

    @property
    def compute_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s + self.eval_forward_s

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.total_s - self.compute_s)

    def as_dict(self) -> dict[str, float]:
        out = {k: float(v) for k, v in asdict(self).items()}
        out.update(compute_s=self.compute_s, overhead_s=self.overhead_s)
        return out


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, num_labels: int
) -> dict[str, float]:
    """``accuracy`` and ``macro_f1`` (mean F1 over the classes present in truth or prediction)."""
    pred = logits.argmax(axis=1)
    f1s = []
    for c in range(num_labels):
        tp = int(np.sum((pred == c) & (labels == c)))
        fp = int(np.sum((pred == c) & (labels != c)))
        fn = int(np.sum((pred != c) & (labels == c)))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {
        "accuracy": float(np.mean(pred == labels)) if len(labels) else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
    }


class Rss:
    """Peak process RSS growth over a baseline, sampled at step boundaries."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base

    def sample(self) -> None:
        rss = self._proc.memory_info().rss
        if rss > self.peak:
            self.peak = rss

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def final_metrics(
    metrics: dict[str, float],
    timings: Timings,
    trainable: int,
    base_params: int,
    peak_mb: float,
    n_train: int,
    n_val: int,
    epochs_trained: float,
) -> dict[str, float]:
    """A run's result: its last task ``metrics`` plus cost metrics and bookkeeping."""
    out = dict(metrics)
    out.update(
        trainable_params=float(trainable),
        params_pct=100.0 * trainable / base_params,
        base_params=float(base_params),
        train_time_s=timings.train_s,
        eval_time_s=timings.eval_s,
        wall_time_s=timings.total_s,
        peak_memory_mb=float(peak_mb),
        examples_per_s=timings.train_examples / timings.train_s if timings.train_s > 0 else 0.0,
        train_examples=float(n_train),
        eval_examples=float(n_val),
        epochs_trained=float(epochs_trained),  # compute of this run, in epochs of the training set
    )
    return out
