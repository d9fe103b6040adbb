"""The ``causal_lm`` task of the peft workload: supervised fine-tuning (SFT) of a decoder LM.

``CausalLmTrainer`` is ``PeftTrainer`` (the same schedule, ``evals_per_epoch`` reports,
checkpoints and exact mid-epoch resume, budgets, ``budget_reached`` / ``epochs_trained``, and
``evaluate: "test"`` on a saved adapter) with:

* data: :mod:`autopeft.trials.sft_data` (prompt + completion tokens; the split is stratified by
  the completions' label set when they form one);
* model: ``AutoModelForCausalLM`` plus the config's PEFT modules; no new head: the LM head is
  pretrained and stays frozen (tied to the input embeddings or not), so every parameter group
  trains at ``lr``;
* loss: the next-token cross-entropy at completion positions only, averaged over those tokens.
  The LM head is applied to those positions only (a forward pre-hook on the output embedding
  gathers them), so a large vocabulary costs logits for the completion tokens, not for every
  position of the batch;
* metrics on the validation split (``test_*`` on the held-out split): ``loss`` (mean per
  completion token), ``perplexity`` = ``exp(loss)`` and ``exact_match``: the share of examples
  whose every completion token (the end token included) is the argmax after the reference
  prefix, which are exactly the examples greedy decoding from the prompt reproduces token for
  token. It is also reported as ``accuracy``, so a study with the objectives accuracy +
  trainable_params runs unchanged; with completions from a small label set it is the
  classification accuracy of the generative model.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from autopeft.trials import checkpoint, data, sft_data
from autopeft.trials.knobs import default_batch_size
from autopeft.trials.metrics import Rss
from autopeft.trials.parallel import unwrap
from autopeft.trials.train import PeftTrainer


class CausalLmTrainer(PeftTrainer):
    """One SFT run of a decoder LM for one config (see the module docstring)."""

    def _tokenize(
        self, spec: data.DataSpec, tokenizer: Any, **cache: Any
    ) -> tuple[sft_data.SftData, bool]:
        template = self.workload.get("prompt_template")
        max_length = self.knobs["max_length"]
        return sft_data.load_sft(spec, tokenizer, self.model_dir, max_length, template, **cache)

    def _load(self, num_labels: int, label_names: tuple[str, ...]) -> torch.nn.Module:
        self.pooling = "model"
        return AutoModelForCausalLM.from_pretrained(
            self.model_dir, local_files_only=True, **self._quantized()
        )

    def _run(self) -> dict[str, float]:
        """``PeftTrainer._run``, except for a config that leaves nothing to train (every LoRA rank 0,
        every layer masked off): there is no head to train either, so it is the base model as it is,
        a legitimate point of the front. It is evaluated once and reported at the trial's last
        report, checkpointed (without tensors) so it is tested and exported like any trial, and
        counts 0 epochs of compute."""
        from transformers import AutoConfig

        from autopeft.peft import count_trainable

        if (
            self.evaluate_split is not None
            or self.workload["full_finetune"]
            or count_trainable(
                self.config, AutoConfig.from_pretrained(self.model_dir, local_files_only=True), None
            )
        ):
            return super()._run()
        t_start = time.perf_counter()
        tokens = self.prepare_data()
        train_idx, val_idx, _ = self.select(tokens)
        model = self.build_model(0, ())
        pad_to = self.knobs["max_length"] if self.workload["padding"] == "max_length" else None
        order = val_idx[np.argsort(tokens.lengths(val_idx), kind="stable")]
        metrics = {
            "epoch": 0.0,
            **self._evaluate(model, tokens, order, pad_to, 0, self._autocast()),
        }
        bs = self.knobs["batch_size"] or default_batch_size(len(train_idx))
        report = self.target_reports(
            min(self.knobs["evals_per_epoch"], math.ceil(len(train_idx) / bs))
        )
        if self.trial.checkpoint_dir is not None:
            state = checkpoint.TrainingState(
                epoch=0,
                step=0,
                train_size=len(train_idx),
                fraction=self.fraction,
                optimizer={},
                scheduler={},
                scaler=None,
                rng=checkpoint.rng_state(),
                history=[metrics],
                report=report,
            )
            checkpoint.save(
                self.trial.checkpoint_dir,
                model,
                state,
                self.config,
                extra={"pooling": self.pooling},
            )
        self.trial.report(report, metrics)
        self.timings.total_s = time.perf_counter() - t_start
        out = self._final(metrics, 0, Rss(), len(train_idx), len(val_idx), 0.0)
        out["budget_reached"] = 1.0
        return out

    def group_lrs(self) -> dict[str, float]:
        lr = self.knobs["lr"]
        return {
            "decay": lr,
            "no_decay": lr,
            "head": lr,
            "head_no_decay": lr,
            "plus": lr * self.plus_ratio(),
        }

    def _completion_logits(self, model, batch, labels, autocast):
        """``(logits (N, vocab) float32, targets (N,), example index (N,))`` of the N completion
        tokens of the batch: position t's logits predict token t + 1."""
        rows, cols = (labels[:, 1:] != sft_data.IGNORE).nonzero(as_tuple=True)
        head = unwrap(model).get_output_embeddings()  # a gang trains through DDP
        gathered = []

        def completion_positions(module, args):
            if args[0].dim() != 3 or args[0].shape[:2] != labels.shape:
                return None  # not the full-sequence call this hook is for: leave it
            gathered.append(True)
            return (
                args[0][:, :-1][rows, cols].unsqueeze(0),
                *args[1:],
            )  # (batch, length, h) -> (1, N, h)

        handle = head.register_forward_pre_hook(completion_positions) if head is not None else None
        try:
            with autocast:
                logits = model(**batch, use_cache=False).logits
        finally:
            if handle is not None:
                handle.remove()
        # a model that computes its logits without calling its output embedding module: gather after
        logits = logits[0] if gathered else logits[:, :-1][rows, cols]
        return logits.float(), labels[:, 1:][rows, cols], rows

    def _loss_terms(self, labels: torch.Tensor) -> int:
        """The completion tokens of the batch (its loss is their mean)."""
        return int((labels[:, 1:] != sft_data.IGNORE).sum())

    def _loss(self, model, batch, labels, autocast) -> torch.Tensor:
        logits, targets, _ = self._completion_logits(model, batch, labels, autocast)
        return F.cross_entropy(logits, targets)

    @torch.no_grad()
    def _evaluate(self, model, tokens, order, pad_to, num_labels, autocast) -> dict[str, float]:
        t_eval = time.perf_counter()
        loss_sum, n_tokens, matched = 0.0, 0, 0
        for batch, labels in self._eval_batches(model, tokens, order, pad_to):
            logits, targets, rows = self._completion_logits(model, batch, labels, autocast)
            loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
            missed = torch.zeros(labels.shape[0], device=logits.device).index_add_(
                0, rows, (logits.argmax(-1) != targets).float()
            )
            matched += int((missed == 0).sum())
            n_tokens += int(targets.numel())
        loss = loss_sum / max(1, n_tokens)
        exact = matched / len(order) if len(order) else 0.0
        self.timings.eval_s += time.perf_counter() - t_eval
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if loss < 700 else float("inf"),
            "exact_match": exact,
            "accuracy": exact,
        }
