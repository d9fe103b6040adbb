"""What a peft trainer settles before its first step (``TrainerSetup``, the base of ``PeftTrainer``):
the workload and knobs resolved, device and precision, the tokenised data and its split, the model
with its pooling, quantisation, dropout, gradient checkpointing and the config's PEFT applied; plus
the device helpers the steps use and the RNG seeding their determinism rests on."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are always local: never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from autopeft.errors import InvalidConfig
from autopeft.trials import data, quant
from autopeft.trials.context import TrialContext
from autopeft.trials.knobs import resolve_knobs
from autopeft.trials.metrics import Timings
from autopeft.trials.workload import as_workload, resolve_model_dir

log = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A seed determined by ``parts`` alone (e.g. ``(seed, epoch)``), well mixed."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class TrainerSetup:
    """Settings, data and model of one run of the peft workload for one config.

    Construction only checks and resolves settings; the trainer's ``run()`` does the work.
    """

    def __init__(
        self,
        workload: dict[str, Any],
        config: dict[str, Any],
        trial: TrialContext,
        *,
        profile: bool = False,
    ):
        self.workload = as_workload(workload)
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
            from autopeft.peft.registry import PEFT_PREFIXES

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
        """The workload's examples, tokenised (from the cache when it holds them: ``cache_hit``)."""
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
        tokens, self.timings.cache_hit = self._tokenize(
            spec, tokenizer, use_cache=use_cache, root=root
        )
        return tokens

    def _tokenize(
        self, spec: data.DataSpec, tokenizer: Any, **cache: Any
    ) -> tuple[data.TokenizedData, bool]:
        """``(examples, cache_hit)`` of ``spec``; ``cache``: the loader's ``use_cache`` and
        ``root``."""
        max_length = self.knobs["max_length"]
        return data.load_tokenized(spec, tokenizer, self.model_dir, max_length, **cache)

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
            from autopeft.peft import apply_peft

            model = apply_peft(model, self.config, self._engine())
        return model.to(self.device)

    def load_base(self, num_labels: int, label_names: tuple[str, ...]) -> torch.nn.Module:
        """The trial's base model as training loads it (head, pooling), without its PEFT modules:
        what an exported adapter is loaded onto, or merged into."""
        return self._load(num_labels, label_names)

    def _engine(self) -> str:
        """Who injects the config: the workload's ``peft_engine``; under ``auto``, a trial resumed
        from a checkpoint is injected the way the checkpoint was (its tensor names; a checkpoint
        from before peft injected LoRA has no ``engine``: the own path)."""
        engine = self.workload.get("peft_engine", "auto")
        restore = getattr(self.trial, "restore_dir", None)
        if engine == "auto" and restore is not None:
            from autopeft.trials import checkpoint

            if checkpoint.exists(restore):
                return checkpoint.read_meta(restore).get("engine", "own")
        return engine

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

    def _sync(self) -> None:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize()

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
