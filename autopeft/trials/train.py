"""The ``peft`` workload: fine-tune a sequence classifier with a PEFT config and measure it
(the ``causal_lm`` task subclasses ``PeftTrainer``: ``autopeft.trials.causal``).

``PeftTrainer(workload, config, trial).run()`` returns the final epoch's task metrics
(``accuracy``, ``macro_f1``, ``loss`` on the fixed validation split, ``train_loss``)
plus cost metrics (``trainable_params``, ``params_pct``, ``train_time_s``,
``peak_memory_mb``, ``examples_per_s``) and bookkeeping (``epoch``, ``base_params``,
``train_examples``, ``eval_examples``). ``trainer.timings`` holds the phase counters the
benchmark reads (forward / backward / optimiser / evaluation / data / setup).

Set-up (settings, data, model): ``autopeft.trials.trainer_setup``; optimiser and schedule:
``autopeft.trials.optimizer``; metrics and counters: ``autopeft.trials.metrics``. This module is
the loop: steps, evaluations, reports, checkpoints and resuming.

Determinism and resuming. Every epoch reseeds all RNGs from ``(seed, epoch)`` and draws
its example order from them, so epoch e is the same computation whether the trial ran
straight or was restored from a checkpoint after epoch e-1. The learning-rate schedule
spans ``epochs`` (config, else workload), not the budget: a trial trained for
``{"epochs": 1}`` and continued to 2 follows the same schedule as one trained for 2.
A restore with the same training set continues the optimiser and scheduler; with a
different one (another ``fraction`` budget) it is a warm start: weights only, new
optimiser and schedule. Learning rate and weight decay always come from the current
config (PBT may have perturbed them).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autopeft.errors import InvalidConfig
from autopeft.trials import checkpoint
from autopeft.trials.context import TrialContext
from autopeft.trials.knobs import default_batch_size
from autopeft.trials.metrics import Rss, classification_metrics, final_metrics
from autopeft.trials.optimizer import apply_lrs, build_optimizer, lr_lambda, optimizer_step
from autopeft.trials.parallel import DataParallel
from autopeft.trials.trainer_setup import TrainerSetup, derive_seed, seed_all
from autopeft.trials.workload import as_workload

log = logging.getLogger(__name__)

#: default learning rate of the task head (see ``PeftTrainer.group_lrs``)
HEAD_LR = 1e-2


class PeftTrainer(TrainerSetup):
    """One run of the peft workload for one config (see the module docstring).

    Construction only checks and resolves settings; ``run()`` does the work.
    """

    def group_lrs(self) -> dict[str, float]:
        """Learning rate per parameter group: the task head trains at ``head_lr`` (default
        ``max(HEAD_LR, lr)``): a freshly initialised linear head needs a larger step than the
        PEFT modules to leave chance within one short epoch (measured in BENCHMARKS.md)."""
        lr = self.knobs["lr"]
        head = self.knobs["head_lr"] if self.knobs["head_lr"] is not None else max(HEAD_LR, lr)
        return {
            "decay": lr,
            "no_decay": lr,
            "head": head,
            "head_no_decay": head,
            "plus": lr * self.plus_ratio(),
        }

    def plus_ratio(self) -> float:
        """LoRA+: ``B`` matrices train at ``lora.plus_ratio`` (default 1) times the rate."""
        return float(self.config.get("lora.plus_ratio", 1.0))

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(
            model,
            self.group_lrs(),
            self.knobs["weight_decay"],
            self.knobs["lr"],
            foreach=self.device.type == "cuda",
        )

    # -------------------------------------------------------------------- run
    def run(self) -> dict[str, float]:
        threads = torch.get_num_threads()
        if self.trial.cpus:
            torch.set_num_threads(self.trial.cpus)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict[str, float]:
        t = self.timings
        t_start = time.perf_counter()
        rss = Rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        tokens = self.prepare_data()
        train_idx, val_idx, test_idx = self.select(tokens)
        t.data_prep_s = time.perf_counter() - t_start
        t_model = time.perf_counter()
        num_labels = len(tokens.label_names)
        model = self.build_model(num_labels, tokens.label_names)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        pad_to = self.knobs["max_length"] if self.workload["padding"] == "max_length" else None
        autocast = self._autocast()
        if self.evaluate_split is not None:  # forward only, from a saved adapter
            return self._evaluate_saved(
                model,
                tokens,
                val_idx if self.evaluate_split == "validation" else test_idx,
                pad_to,
                num_labels,
                autocast,
            )
        if self.workload.get("linear_probe"):
            from autopeft.trials.probe import FORWARD_ONLY_EPOCHS, run_probe

            metrics = run_probe(
                self, model, tokens, train_idx, val_idx, pad_to, num_labels, autocast
            )
            t.total_s = time.perf_counter() - t_start
            out = self._final(
                metrics, trainable, rss, len(train_idx), len(val_idx), FORWARD_ONLY_EPOCHS
            )
            out["budget_reached"] = 1.0
            return out
        if self.knobs["batch_size"] is None:
            self.knobs["batch_size"] = default_batch_size(len(train_idx))
        bs = self.knobs["batch_size"]
        spe = math.ceil(len(train_idx) / bs)  # optimiser steps per epoch
        per_epoch = min(self.knobs["evals_per_epoch"], spe)
        # evaluations (and reports) after these batch counts of every epoch; the last is the epoch's end
        eval_at = {int(round(k * spe / per_epoch)) for k in range(1, per_epoch + 1)}
        target = self.target_reports(per_epoch)
        horizon = max(
            self.horizon, math.ceil(target / per_epoch)
        )  # the schedule's length in epochs
        total_steps = horizon * spe
        optimizer = self._optimizer(model)
        from autopeft.peft.peftlib import TrainingHooks

        self.hooks = TrainingHooks(model)
        self.hooks.begin(total_steps)
        warmup = int(self.knobs["warmup_ratio"] * total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.knobs["scheduler"], warmup, total_steps)
        )
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        step, report, history = 0, 0, []
        if self.trial.restore_dir is not None:
            step, report, history = self._restore(
                model, optimizer, scheduler, scaler, len(train_idx)
            )
        start_step = step
        dp = DataParallel()  # a data-parallel gang's rank (autopeft.trials.parallel), else identity
        train_model = dp.wrap(model, self.device)
        t.model_s = time.perf_counter() - t_model
        t.setup_s = time.perf_counter() - t_start

        val_order = val_idx[np.argsort(tokens.lengths(val_idx), kind="stable")]
        full = self.knobs["epochs"] * per_epoch  # the trial's last report
        metrics: dict[str, float] = {}
        loss_sum, seen = torch.zeros((), device=self.device), 0
        while report < target:
            epoch, offset = divmod(step, spe)
            if offset == 0:
                seed_all(derive_seed(self.knobs["seed"], epoch + 1))
            order = np.random.default_rng(
                derive_seed(self.knobs["seed"], epoch + 1, 1)
            ).permutation(train_idx)
            train_model.train()
            t_epoch = time.perf_counter()
            go_on = True
            for b in range(offset, spe):
                rows = order[b * bs : (b + 1) * bs]
                local, active = dp.shard(rows)
                loss_sum += self._train_step(
                    train_model,
                    optimizer,
                    scheduler,
                    scaler,
                    tokens,
                    local,
                    pad_to,
                    autocast,
                    dp,
                    active,
                ) * (len(rows) / dp.world)
                seen += len(rows) / dp.world
                t.train_examples += len(rows)
                step += 1
                rss.sample()
                if b + 1 not in eval_at:
                    continue
                report += 1
                t.train_s += time.perf_counter() - t_epoch
                loss_total, seen_total = dp.sum(loss_sum, seen, device=self.device)
                metrics = {"epoch": step / spe, "train_loss": loss_total / max(1, seen_total)}
                loss_sum, seen = torch.zeros((), device=self.device), 0
                t0 = time.perf_counter()
                if dp.main:  # one voice: rank 0 evaluates, checkpoints and reports
                    metrics.update(
                        self._evaluate(model, tokens, val_order, pad_to, num_labels, autocast)
                    )
                    rss.sample()
                    history.append(metrics)
                    self._checkpoint(
                        model,
                        optimizer,
                        scheduler,
                        scaler,
                        step,
                        report,
                        spe,
                        len(train_idx),
                        history,
                    )
                    t0 = time.perf_counter()
                    go_on = self.trial.report(report, metrics)
                go_on = dp.agree(go_on, device=self.device)
                t.report_s += time.perf_counter() - t0
                t_epoch = time.perf_counter()
                if not go_on or report >= target:
                    break
                train_model.train()
            t.train_s += time.perf_counter() - t_epoch
            if not go_on:
                break
        if not dp.main:
            return {}  # rank 0 answers for the gang
        if not metrics:  # nothing left to train (budget already reached): evaluate as is
            metrics = {"epoch": step / spe}
            if history:
                metrics["train_loss"] = float(history[-1].get("train_loss", float("nan")))
            metrics.update(self._evaluate(model, tokens, val_order, pad_to, num_labels, autocast))
        t.steps += step - start_step
        t.total_s = time.perf_counter() - t_start
        out = self._final(
            metrics, trainable, rss, len(train_idx), len(val_idx), (step - start_step) / spe
        )
        out["budget_reached"] = 1.0 if report >= full else 0.0
        if dp.on:
            out["workers"] = float(dp.world)
        return out

    def target_reports(self, per_epoch: int) -> int:
        """The report to stop after: the budget's (``{"step": n}`` or ``{"epochs": e}``), else the
        trial's last (``epochs`` x ``evals_per_epoch``)."""
        budget = self.trial.budget or {}
        if "step" in budget:
            return int(budget["step"])
        return int(budget.get("epochs", self.knobs["epochs"])) * per_epoch

    def _train_step(
        self,
        model,
        optimizer,
        scheduler,
        scaler,
        tokens,
        rows,
        pad_to,
        autocast,
        dp: DataParallel | None = None,
        active: bool = True,
    ) -> torch.Tensor:
        """One optimiser step on ``rows``; returns their mean loss. In a data-parallel gang
        (``dp``; ``active`` False: a row that only keeps this worker in the step) the loss is
        weighted by this worker's share of the global batch's loss terms, and the value returned
        is that weighted loss: the mean of the workers' values is the global batch's mean loss."""
        t = self.timings
        t0 = time.perf_counter()
        batch = self._to_device(tokens.batch(rows, pad_to))
        labels = batch.pop("labels")
        self._sync()
        t1 = time.perf_counter()
        loss = self._loss(model, batch, labels, autocast)
        scale = 1.0
        if dp is not None and dp.on:
            scale = dp.scale(self._loss_terms(labels) if active else 0, device=self.device)
        hooks = getattr(self, "hooks", None)
        total = loss * scale if scale != 1.0 else loss
        if hooks is not None and hooks.active:
            total = total + hooks.extra_loss()
        self._sync()
        t2 = time.perf_counter()
        if scaler is not None:
            scaler.scale(total).backward()
        else:
            total.backward()
        self._sync()
        t3 = time.perf_counter()
        self._optimizer_step(model, optimizer, scheduler, scaler)
        self._sync()
        t4 = time.perf_counter()
        t.data_s += t1 - t0
        t.forward_s += t2 - t1
        t.backward_s += t3 - t2
        t.optimizer_s += t4 - t3
        return loss.detach() * scale

    def _loss_terms(self, labels: torch.Tensor) -> int:
        """How many terms the batch's mean loss averages: one per example."""
        return int(labels.shape[0])

    def _loss(self, model, batch, labels, autocast) -> torch.Tensor:
        """The training loss of one batch (mean cross-entropy of the head's logits)."""
        with autocast:
            logits = model(**batch).logits
        return F.cross_entropy(logits.float(), labels)

    def _checkpoint(
        self, model, optimizer, scheduler, scaler, step, report, spe, train_size, history
    ) -> None:
        if self.trial.checkpoint_dir is None:
            return
        t0 = time.perf_counter()
        state = checkpoint.TrainingState(
            epoch=step // spe,
            step=step,
            train_size=train_size,
            fraction=self.fraction,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            rng=checkpoint.rng_state(),
            history=history,
            report=report,
        )
        checkpoint.save(
            self.trial.checkpoint_dir, model, state, self.config, extra={"pooling": self.pooling}
        )
        self.timings.checkpoint_s += time.perf_counter() - t0

    def _evaluate_saved(
        self, model, tokens, indices, pad_to, num_labels, autocast
    ) -> dict[str, float]:
        """Metrics of the adapter saved in ``restore_dir`` on a held-out split (forward only),
        prefixed with the split's name: ``test_accuracy``, ``test_macro_f1``, ``test_loss``."""
        if not checkpoint.exists(self.trial.restore_dir):
            raise InvalidConfig(
                f"evaluating split {self.evaluate_split!r} needs a saved adapter in restore_dir",
                field="restore_dir",
            )
        checkpoint.load(self.trial.restore_dir, model)
        order = indices[np.argsort(tokens.lengths(indices), kind="stable")]
        metrics = self._evaluate(model, tokens, order, pad_to, num_labels, autocast)
        prefix = "test" if self.evaluate_split == "test" else "validation"
        out = {f"{prefix}_{k}": v for k, v in metrics.items()}
        out[f"{prefix}_examples"] = float(len(indices))
        return out

    def _optimizer_step(self, model, optimizer, scheduler, scaler) -> None:
        hooks = getattr(self, "hooks", None)
        after = hooks.after_step if hooks is not None and hooks.active else None
        optimizer_step(model, optimizer, scheduler, scaler, self.knobs["max_grad_norm"], after)

    def _eval_batches(self, model, tokens, order, pad_to) -> Iterator[tuple[dict, torch.Tensor]]:
        """``(batch, labels)`` on the device for each evaluation batch of ``order``, with ``model``
        in eval mode; the work the caller does on a batch (until it asks for the next) counts as
        ``eval_forward_s``, the examples as ``eval_examples``."""
        t = self.timings
        model.eval()
        ebs = self.knobs["eval_batch_size"]
        for b in range(0, len(order), ebs):
            batch = self._to_device(tokens.batch(order[b : b + ebs], pad_to))
            labels = batch.pop("labels")
            self._sync()
            t0 = time.perf_counter()
            yield batch, labels
            self._sync()
            t.eval_forward_s += time.perf_counter() - t0
        t.eval_examples += len(order)

    @torch.no_grad()
    def _evaluate(self, model, tokens, order, pad_to, num_labels, autocast) -> dict[str, float]:
        """``accuracy``, ``macro_f1`` and ``loss`` (mean cross-entropy) of ``model`` on ``order``."""
        t_eval = time.perf_counter()
        all_logits, loss_sum = [], 0.0
        for batch, labels in self._eval_batches(model, tokens, order, pad_to):
            with autocast:
                logits = model(**batch).logits.float()
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            all_logits.append(logits)
        logits = torch.cat(all_logits).cpu().numpy()
        out = classification_metrics(logits, tokens.labels[order], num_labels)
        out["loss"] = loss_sum / len(order)
        self.timings.eval_s += time.perf_counter() - t_eval
        return out

    def _restore(
        self, model, optimizer, scheduler, scaler, train_size: int
    ) -> tuple[int, int, list[dict[str, float]]]:
        """Load ``restore_dir``; returns (optimiser steps, reports, history) to continue from."""
        state = checkpoint.load(self.trial.restore_dir, model)
        if state.train_size != train_size or state.fraction != self.fraction:
            log.info(
                "warm start from %s: trained on %d examples (fraction %g), now %d (%g); "
                "weights restored, new optimiser and schedule",
                self.trial.restore_dir,
                state.train_size,
                state.fraction,
                train_size,
                self.fraction,
            )
            return 0, 0, []
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        checkpoint.set_rng_state(state.rng)
        # The current config's lr and weight decay win (PBT may have changed them).
        apply_lrs(optimizer, scheduler, self.group_lrs(), self.knobs["weight_decay"])
        return state.step, state.report, state.history

    def _final(
        self, metrics, trainable, rss, n_train, n_val, epochs_trained: float
    ) -> dict[str, float]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = rss.growth_mb
        out = final_metrics(
            metrics,
            self.timings,
            trainable,
            self.base_params,
            peak,
            n_train,
            n_val,
            epochs_trained,
        )
        predicted = self.predicted_memory_mb()
        if predicted is not None:
            out["predicted_memory_mb"] = predicted
        return out


def trainer_for(
    workload: dict[str, Any], config: dict[str, Any], trial: TrialContext
) -> PeftTrainer:
    """The trainer of the workload's ``task``: ``PeftTrainer`` (classification) or
    ``autopeft.trials.causal.CausalLmTrainer`` (causal_lm)."""
    workload = as_workload(workload)  # validated once, here or at its boundary
    if workload.task != "causal_lm":
        return PeftTrainer(workload, config, trial)
    from autopeft.trials.causal import CausalLmTrainer

    return CausalLmTrainer(workload, config, trial)


def run_peft(
    workload: dict[str, Any], config: dict[str, Any], trial: TrialContext
) -> dict[str, float]:
    """Run the peft workload (see ``PeftTrainer``; the causal_lm task: ``trials/causal.py``)."""
    return trainer_for(workload, config, trial).run()
