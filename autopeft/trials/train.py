"""The ``peft`` workload: fine-tune a sequence classifier with a PEFT config and measure it
(the ``causal_lm`` task subclasses ``PeftTrainer``: ``autopeft.trials.causal``).

``PeftTrainer(workload, config, trial).run()`` returns the final epoch's task metrics
(``accuracy``, ``macro_f1``, ``loss`` on the fixed validation split, ``train_loss``)
plus cost metrics (``trainable_params``, ``params_pct``, ``train_time_s``,
``peak_memory_mb``, ``examples_per_s``) and bookkeeping (``epoch``, ``base_params``,
``train_examples``, ``eval_examples``). ``trainer.timings`` holds the phase counters the
benchmark reads (forward / backward / optimiser / evaluation / data / setup).

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

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are always local: never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from autopeft.errors import InvalidConfig
from autopeft.trials import checkpoint, data, quant
from autopeft.trials.context import TrialContext
from autopeft.trials.knobs import default_batch_size, resolve_knobs
from autopeft.trials.workload import resolve_model_dir, validate_workload

log = logging.getLogger(__name__)

#: default learning rate of the task head (see ``PeftTrainer.group_lrs``)
HEAD_LR = 1e-2


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


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


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


class _Rss:
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


class PeftTrainer:
    """One run of the peft workload for one config (see the module docstring).

    Construction only checks and resolves settings; ``run()`` does the work.
    """

    def __init__(
        self,
        workload: dict[str, Any],
        config: dict[str, Any],
        trial: TrialContext,
        *,
        profile: bool = False,
    ):
        self.workload = validate_workload(workload)
        self.config = dict(config)
        self.trial = trial
        self.knobs = resolve_knobs(self.workload, self.config)
        self.profile = profile
        self.timings = Timings()
        self.model_dir = resolve_model_dir(self.workload["model"])
        budget = trial.budget or {}
        self.fraction = float(budget.get("fraction", 1.0))
        self.horizon = max(self.knobs["epochs"], int(budget.get("epochs", 0)))
        self.evaluate_split = self.workload.get("evaluate")
        self.pooling = "model"
        self.device = self._pick_device()
        self.precision = self.workload["precision"]
        if self.precision != "fp32" and self.device.type != "cuda":
            log.warning(
                "precision %s needs CUDA; training on %s in fp32", self.precision, self.device
            )
            self.precision = "fp32"
        if self.workload["full_finetune"]:
            from autopeft.space import PEFT_PREFIXES

            peft_keys = [k for k in self.config if k.startswith(PEFT_PREFIXES)]
            if peft_keys:
                raise InvalidConfig(
                    f"full_finetune trains every weight; the config must not "
                    f"set PEFT keys such as {peft_keys[0]!r}",
                    field=peft_keys[0],
                )

    # ------------------------------------------------------------------ set-up
    def _pick_device(self) -> torch.device:
        wanted = self.workload["device"]
        gpus = self.trial.gpus
        if wanted == "cuda" and not torch.cuda.is_available():
            raise InvalidConfig(
                "device 'cuda' requested but CUDA is not available", field="workload.device"
            )
        if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available() and gpus != 0):
            return torch.device("cuda")
        return torch.device("cpu")

    def prepare_data(self, use_cache: bool = True) -> data.TokenizedData:
        wl = self.workload
        spec = data.data_spec(
            wl["dataset"],
            text_column=wl["text_column"],
            label_column=wl["label_column"],
            labels=wl["labels"],
            format=wl["format"],
            encoding=wl["encoding"],
        )
        tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        root = Path(wl["cache_dir"]).expanduser() if wl["cache_dir"] else None
        tokens, hit = data.load_tokenized(
            spec,
            tokenizer,
            self.model_dir,
            self.knobs["max_length"],
            root=root,
            use_cache=use_cache,
        )
        self.timings.cache_hit = hit
        return tokens

    def select(self, tokens: data.TokenizedData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training, validation and test indices (fixed split, then max_train and fraction)."""
        wl = self.workload
        train_pool, val, test = data.split_with_test(
            tokens.labels,
            wl["validation_fraction"],
            wl["test_fraction"],
            wl["split_seed"],
            wl["max_eval"],
            wl["max_test"],
        )
        train = train_pool
        if wl["max_train"]:
            train = data.stratified_take(train, tokens.labels, wl["max_train"], wl["split_seed"])
        if self.fraction < 1.0:
            n = max(1, int(round(self.fraction * len(train))))
            train = data.stratified_take(train, tokens.labels, n, wl["split_seed"])
        if len(train) == 0 or len(val) == 0 or len(test) == 0:
            raise InvalidConfig(
                f"dataset {wl['dataset']!r} leaves {len(train)} training, {len(val)} "
                f"validation and {len(test)} test examples",
                field="workload.dataset",
            )
        return train, val, test

    def build_model(self, num_labels: int, label_names: tuple[str, ...]) -> torch.nn.Module:
        """Load the model, set dropout, then apply the config's PEFT (the one place it is)."""
        seed_all(self.knobs["seed"])  # the new head and PEFT modules initialise from it
        self.num_labels = num_labels
        hf_log = transformers.utils.logging
        verbosity, bars = hf_log.get_verbosity(), hf_log.is_progress_bar_enabled()
        hf_log.set_verbosity_error()  # "newly initialised head" is expected, not news
        hf_log.disable_progress_bar()
        try:
            model = self._load(num_labels, label_names)
            quant.prepare(model)
        finally:
            hf_log.set_verbosity(verbosity)
            if bars:
                hf_log.enable_progress_bar()
        if self.knobs["dropout"] is not None:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = self.knobs["dropout"]
        self.base_params = quant.param_count(model)
        if self.workload.get("gradient_checkpointing"):
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise InvalidConfig(
                    f"gradient_checkpointing: {type(model).__name__} does not support it",
                    field="workload.gradient_checkpointing",
                )
            # non-reentrant: gradients reach PEFT modules inside a layer whose input needs no gradient
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
                model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
            else:
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
        if self.workload["full_finetune"]:
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            import autopeft

            model = autopeft.apply_peft(model, self.config)
        return model.to(self.device)

    def _load(self, num_labels: int, label_names: tuple[str, ...]) -> torch.nn.Module:
        """The sequence classifier with a fresh head, its pooling applied. A decoder without a pad
        token (GPT-2) gets the id batches are padded with (``data.pad_token_id``): its head reads the
        last non-pad token, and transformers refuses batches of more than one without one."""
        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir,
            num_labels=num_labels,
            local_files_only=True,
            **self._quantized(),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
        )
        if getattr(model.config, "pad_token_id", 0) is None:
            tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model.config.pad_token_id = data.pad_token_id(tokenizer)
        self.pooling = self._pooling()
        from autopeft.peft.pooling import apply_pooling

        apply_pooling(model, self.pooling)
        return model

    def _quantized(self) -> dict[str, Any]:
        return quant.load_kwargs(self.workload.get("quantization"), self.precision, self.device)

    def _pooling(self) -> str:
        pooling = self.workload.get("pooling", "auto")
        if pooling == "auto":
            from autopeft.peft.pooling import detect_pooling

            pooling = detect_pooling(self.model_dir)
        return pooling

    def group_lrs(self) -> dict[str, float]:
        """Learning rate per parameter group: the task head trains at ``head_lr`` (default
        ``max(HEAD_LR, lr)``): a freshly initialised linear head needs a larger step than the
        PEFT modules to leave chance within one short epoch (measured in BENCHMARKS.md)."""
        lr = self.knobs["lr"]
        head = self.knobs["head_lr"] if self.knobs["head_lr"] is not None else max(HEAD_LR, lr)
        return {"decay": lr, "no_decay": lr, "head": head, "head_no_decay": head}

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        from autopeft.peft.arch import map_model

        try:
            head = tuple(f"{h}." for h in map_model(model).head)
        except InvalidConfig:
            head = ()
        buckets: dict[str, list] = {"decay": [], "no_decay": [], "head": [], "head_no_decay": []}
        for name, p in model.named_parameters():
            if p.requires_grad:
                no_decay = p.ndim < 2 or "norm" in name.lower()
                prefix = "head" if name.startswith(head) else ""
                key = (
                    (prefix + ("_no_decay" if no_decay else ""))
                    if prefix
                    else ("no_decay" if no_decay else "decay")
                )
                buckets[key].append(p)
        if not any(buckets.values()):
            raise InvalidConfig("the config leaves no trainable parameter", field="config")
        lrs = self.group_lrs()
        decay = self.knobs["weight_decay"]
        groups = [
            {
                "params": params,
                "lr": lrs[name],
                "name": name,
                "weight_decay": 0.0 if name.endswith("no_decay") else decay,
            }
            for name, params in buckets.items()
            if params
        ]
        # Parameter order = named_parameters order = checkpoint.trainable_names order.
        return torch.optim.AdamW(groups, lr=self.knobs["lr"], foreach=self.device.type == "cuda")

    # -------------------------------------------------------------------- run
    def run(self) -> dict[str, float]:
        threads = torch.get_num_threads()
        if self.trial.cpus:
            torch.set_num_threads(self.trial.cpus)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _sync(self) -> None:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize()

    def _run(self) -> dict[str, float]:
        t = self.timings
        t_start = time.perf_counter()
        rss = _Rss()
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
            model.train()
            t_epoch = time.perf_counter()
            go_on = True
            for b in range(offset, spe):
                rows = order[b * bs : (b + 1) * bs]
                loss_sum += self._train_step(
                    model, optimizer, scheduler, scaler, tokens, rows, pad_to, autocast
                ) * len(rows)
                seen += len(rows)
                t.train_examples += len(rows)
                step += 1
                rss.sample()
                if b + 1 not in eval_at:
                    continue
                report += 1
                t.train_s += time.perf_counter() - t_epoch
                metrics = {"epoch": step / spe, "train_loss": float(loss_sum) / max(1, seen)}
                loss_sum, seen = torch.zeros((), device=self.device), 0
                metrics.update(
                    self._evaluate(model, tokens, val_order, pad_to, num_labels, autocast)
                )
                rss.sample()
                history.append(metrics)
                self._checkpoint(
                    model, optimizer, scheduler, scaler, step, report, spe, len(train_idx), history
                )
                t0 = time.perf_counter()
                go_on = self.trial.report(report, metrics)
                t.report_s += time.perf_counter() - t0
                t_epoch = time.perf_counter()
                if not go_on or report >= target:
                    break
                model.train()
            t.train_s += time.perf_counter() - t_epoch
            if not go_on:
                break
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
        return out

    def target_reports(self, per_epoch: int) -> int:
        """The report to stop after: the budget's (``{"step": n}`` or ``{"epochs": e}``), else the
        trial's last (``epochs`` x ``evals_per_epoch``)."""
        budget = self.trial.budget or {}
        if "step" in budget:
            return int(budget["step"])
        return int(budget.get("epochs", self.knobs["epochs"])) * per_epoch

    def _train_step(
        self, model, optimizer, scheduler, scaler, tokens, rows, pad_to, autocast
    ) -> torch.Tensor:
        t = self.timings
        t0 = time.perf_counter()
        batch = self._to_device(tokens.batch(rows, pad_to))
        labels = batch.pop("labels")
        self._sync()
        t1 = time.perf_counter()
        loss = self._loss(model, batch, labels, autocast)
        self._sync()
        t2 = time.perf_counter()
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        self._sync()
        t3 = time.perf_counter()
        self._optimizer_step(model, optimizer, scheduler, scaler)
        self._sync()
        t4 = time.perf_counter()
        t.data_s += t1 - t0
        t.forward_s += t2 - t1
        t.backward_s += t3 - t2
        t.optimizer_s += t4 - t3
        return loss.detach()

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

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _to_device(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return {
            k: torch.from_numpy(v).to(self.device, non_blocking=non_blocking)
            for k, v in batch.items()
        }

    def _optimizer_step(self, model, optimizer, scheduler, scaler) -> None:
        clip = self.knobs["max_grad_norm"]
        if scaler is not None:
            scaler.unscale_(optimizer)
        if clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _evaluate(self, model, tokens, order, pad_to, num_labels, autocast) -> dict[str, float]:
        t = self.timings
        t_eval = time.perf_counter()
        model.eval()
        ebs = self.knobs["eval_batch_size"]
        all_logits, loss_sum = [], 0.0
        for b in range(0, len(order), ebs):
            batch = self._to_device(tokens.batch(order[b : b + ebs], pad_to))
            labels = batch.pop("labels")
            self._sync()
            t0 = time.perf_counter()
            with autocast:
                logits = model(**batch).logits.float()
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            self._sync()
            t.eval_forward_s += time.perf_counter() - t0
            all_logits.append(logits.cpu().numpy())
        t.eval_examples += len(order)
        logits = np.concatenate(all_logits)
        out = classification_metrics(logits, tokens.labels[order], num_labels)
        out["loss"] = loss_sum / len(order)
        t.eval_s += time.perf_counter() - t_eval
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
        lrs = self.group_lrs()
        scheduler.base_lrs = [lrs[g["name"]] for g in optimizer.param_groups]
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
        for group in optimizer.param_groups:
            group["initial_lr"] = lrs[group["name"]]
            group["lr"] = lrs[group["name"]] * factor
            if group["name"] in ("decay", "head"):
                group["weight_decay"] = self.knobs["weight_decay"]
        return state.step, state.report, state.history

    def _final(
        self, metrics, trainable, rss, n_train, n_val, epochs_trained: float
    ) -> dict[str, float]:
        t = self.timings
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = rss.growth_mb
        out = dict(metrics)
        out.update(
            trainable_params=float(trainable),
            params_pct=100.0 * trainable / self.base_params,
            base_params=float(self.base_params),
            train_time_s=t.train_s,
            eval_time_s=t.eval_s,
            wall_time_s=t.total_s,
            peak_memory_mb=float(peak),
            examples_per_s=t.train_examples / t.train_s if t.train_s > 0 else 0.0,
            train_examples=float(n_train),
            eval_examples=float(n_val),
            epochs_trained=float(
                epochs_trained
            ),  # compute of this run, in epochs of the training set
        )
        predicted = self.predicted_memory_mb()
        if predicted is not None:
            out["predicted_memory_mb"] = predicted
        return out

    def predicted_memory_mb(self) -> float | None:
        """The memory model's peak for this trial (``autopeft.peft.memory.predicted_memory_mb``: the
        workload's batch size, or 32 when it leaves it to the trainer), as the controller knows it
        before training; None (logged) when it cannot be computed."""
        from autopeft.models import load_model_config
        from autopeft.peft.memory import predicted_memory_mb

        try:
            labels = (
                None
                if self.workload.get("task") == "causal_lm"
                else getattr(self, "num_labels", None)
            )
            return float(
                predicted_memory_mb(
                    {} if self.workload["full_finetune"] else self.config,
                    load_model_config(self.model_dir),
                    self.workload,
                    num_labels=labels,
                )
            )
        except Exception as err:
            log.warning("no predicted_memory_mb: %s: %s", type(err).__name__, err)
            return None


def trainer_for(
    workload: dict[str, Any], config: dict[str, Any], trial: TrialContext
) -> PeftTrainer:
    """The trainer of the workload's ``task``: ``PeftTrainer`` (classification) or
    ``autopeft.trials.causal.CausalLmTrainer`` (causal_lm)."""
    if validate_workload(workload)["task"] != "causal_lm":
        return PeftTrainer(workload, config, trial)
    from autopeft.trials.causal import CausalLmTrainer

    return CausalLmTrainer(workload, config, trial)


def run_peft(
    workload: dict[str, Any], config: dict[str, Any], trial: TrialContext
) -> dict[str, float]:
    """Run the peft workload (see ``PeftTrainer``; the causal_lm task: ``trials/causal.py``)."""
    return trainer_for(workload, config, trial).run()
