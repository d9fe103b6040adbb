"""One recorded run of the table: the service's own peft trainer, with the test split evaluated
beside validation at every report and each example's correctness kept.

``record_run(workload, config, seed, threads)`` trains ``config`` exactly as a study's trial would
(``autopeft.trials.train.PeftTrainer``, the linear probe through its own path) and returns a
JSON-ready dict:

* ``reports``: one per report (``evals_per_epoch`` per epoch; the probe has one): ``step``,
  ``epoch``, ``train_loss``, the validation ``accuracy`` and ``loss`` the live trial reports,
  ``test_accuracy``, and ``val_bits`` / ``test_bits``: each example's correctness
  (``np.packbits``, base64) in the order of the split's dataset rows (sorted);
* ``val_index`` / ``test_index``: those rows (the same for every run of a task);
* costs: ``trainable_params``, ``wall_s``, ``train_time_s``, ``peak_rss_mb``.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np


def pack(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(bits, bool)).tobytes()).decode()


def unpack(text: str, n: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw)[:n].astype(bool)


def _recording_trainer():
    import torch
    import torch.nn.functional as F

    from autopeft.trials.metrics import classification_metrics
    from autopeft.trials.train import PeftTrainer

    class RecordingTrainer(PeftTrainer):
        """``PeftTrainer`` that keeps per-example correctness on validation and test."""

        def select(self, tokens):
            train, val, test = super().select(tokens)
            self.tokens_, self.val_idx_, self.test_idx_ = tokens, val, test
            self.records: list[dict[str, Any]] = []
            return train, val, test

        @torch.no_grad()
        def _logits(self, model, order, pad_to, autocast) -> tuple[np.ndarray, float]:
            chunks, loss_sum = [], 0.0
            for batch, labels in self._eval_batches(model, self.tokens_, order, pad_to):
                with autocast:
                    logits = model(**batch).logits.float()
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                chunks.append(logits)
            return torch.cat(chunks).cpu().numpy(), loss_sum / len(order)

        def _bits(self, logits: np.ndarray, order: np.ndarray) -> np.ndarray:
            """Correctness of ``order``'s examples, rearranged into sorted-row order."""
            correct = logits.argmax(1) == self.tokens_.labels[order]
            bits = np.empty(len(order), bool)
            bits[np.argsort(order, kind="stable")] = correct
            return bits

        def _record_test(self, model, pad_to, autocast, val_bits: np.ndarray) -> None:
            t0 = time.perf_counter()
            idx = self.test_idx_
            order = idx[np.argsort(self.tokens_.lengths(idx), kind="stable")]
            logits, loss = self._logits(model, order, pad_to, autocast)
            bits = self._bits(logits, order)
            self.records.append(
                {
                    "val_bits": pack(val_bits),
                    "test_accuracy": float(bits.mean()),
                    "test_loss": loss,
                    "test_bits": pack(bits),
                    "record_s": time.perf_counter() - t0,
                }
            )

        def _evaluate(self, model, tokens, order, pad_to, num_labels, autocast):
            t_eval = time.perf_counter()
            logits, loss = self._logits(model, order, pad_to, autocast)
            out = classification_metrics(logits, tokens.labels[order], num_labels)
            out["loss"] = loss
            self.timings.eval_s += time.perf_counter() - t_eval
            self._record_test(model, pad_to, autocast, self._bits(logits, order))
            return out

        def _checkpoint(self, model, *args, **kwargs):
            super()._checkpoint(model, *args, **kwargs)
            if self.workload.get("linear_probe"):  # the fitted probe, before its one report
                pad_to = (
                    self.knobs["max_length"] if self.workload["padding"] == "max_length" else None
                )
                idx = self.val_idx_
                order = idx[np.argsort(self.tokens_.lengths(idx), kind="stable")]
                logits, _ = self._logits(model, order, pad_to, self._autocast())
                self._record_test(model, pad_to, self._autocast(), self._bits(logits, order))

    return RecordingTrainer


def record_run(
    workload: dict, config: dict, seed: int, threads: int = 1, budget: dict | None = None
) -> dict[str, Any]:
    """Train ``config`` on ``workload`` (baseline overrides already merged) with training seed
    ``seed`` and return the recorded run (see the module docstring); ``budget``: the trial's
    fidelity (``TrialContext.budget``, e.g. ``{"fraction": 1/3}``: a third of the training data,
    the same validation and test splits)."""
    import torch

    from autopeft.trials.context import TrialContext

    torch.set_num_threads(threads)
    reports: list[dict[str, float]] = []
    trial = TrialContext(
        trial_id="table",
        reporter=lambda step, m: reports.append({"step": step, **m}) or "continue",
        resources={"cpus": threads},
        budget=budget,
    )
    trainer = _recording_trainer()({**workload, "seed": seed}, dict(config), trial)
    t0 = time.perf_counter()
    final = trainer.run()
    wall = time.perf_counter() - t0
    if len(reports) != len(trainer.records):
        raise RuntimeError(
            f"{len(reports)} reports but {len(trainer.records)} recorded evaluations"
        )
    keep = ("step", "epoch", "train_loss", "accuracy", "loss")
    return {
        "seed": seed,
        "reports": [
            {**{k: rep[k] for k in keep if k in rep}, **rec}
            for rep, rec in zip(reports, trainer.records)
        ],
        "trainable_params": int(final["trainable_params"]),
        "wall_s": round(wall, 2),
        "train_time_s": round(float(final.get("train_time_s", 0.0)), 2),
        "peak_rss_mb": round(float(final.get("peak_memory_mb", 0.0)), 1),
        "val_index": trainer.val_idx_.tolist(),
        "test_index": trainer.test_idx_.tolist(),
    }
