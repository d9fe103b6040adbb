"""Turning a trial's training checkpoint into an exported adapter (``trials/{id}/adapter``).

A peft trial's checkpoint holds only the trainable tensors plus training state; the first
export request rebuilds the model (base weights from the local model folder, the config's
PEFT modules), loads those tensors and writes ``autopeft.export_adapter``'s folder into
``<trial dir>/adapter`` (a ``peft.PeftModel``-loadable adapter when the config is expressible
in peft, the project's own format otherwise). Later requests serve that folder. Python
workloads that wrote their own ``adapter/`` or checkpoint are served as written.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_HEAD_SUFFIXES = ("classifier.weight", "classifier.out_proj.weight", "score.weight")


def ensure_peft_adapter(
    spec: dict[str, Any], config: dict[str, Any], trial_id: int, root: Path
) -> Path | None:
    """``root/adapter`` for a peft trial with a checkpoint (built on first use), else None."""
    adapter = root / "adapter"
    ckpt = root / "checkpoint"
    workload = spec.get("workload") or {}
    if adapter.is_dir() and any(adapter.iterdir()):
        return adapter
    if workload.get("kind") != "peft" or not (ckpt / "meta.json").is_file():
        return None
    with _lock:
        if adapter.is_dir() and any(adapter.iterdir()):
            return adapter
        from safetensors import safe_open

        import autopeft
        from autopeft.trials import TrialContext, checkpoint
        from autopeft.trials.train import trainer_for

        with safe_open(str(ckpt / checkpoint.WEIGHTS), "pt") as f:
            heads = [f.get_slice(k).get_shape()[0] for k in f.keys() if k.endswith(_HEAD_SUFFIXES)]  # noqa: SIM118 (safe_open has no __iter__)
        num_labels = heads[0] if heads else (len(_known_labels(workload)) or 2)
        labels = _labels(workload, num_labels)
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        config = dict(meta.get("config") or config)
        # a 4-bit trial's adapter is exported on the full-precision base (what QLoRA adapters load onto)
        # the path that injected the trial (checkpoints from before peft injected LoRA: "own")
        engine = meta.get("engine", "own") if not workload.get("full_finetune") else "auto"
        trainer = trainer_for(
            {**workload, "quantization": None, "peft_engine": engine},
            config,
            TrialContext(trial_id=trial_id, resources={"cpus": 1, "gpus": 0}),
        )
        model = trainer.build_model(num_labels, tuple(str(x) for x in labels)).to("cpu")
        checkpoint.load(ckpt, model)
        tmp = root / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        autopeft.export_adapter(model, config, tmp)
        tmp.rename(adapter)
        return adapter


# -------------------------------------------------------------------- merged model, model card
#: peft types whose adapter folds into the base weights (``merge_and_unload``)
MERGEABLE = ("LORA", "IA3", "VERA", "LOHA", "LOKR", "ADALORA")
#: files of a model folder that the merged folder keeps beside the weights: the tokenizer's (the
#: ones the tokenisation cache keys on) and the sentence-transformers pooling description
_POOLING_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


def _known_labels(workload: dict[str, Any]) -> list[str]:
    """The workload's label names: its own, else a built-in dataset's, else none."""
    labels = list(workload.get("labels") or [])
    if not labels:
        from autopeft.trials.data import BUILTIN_DATASETS

        if workload.get("dataset") in BUILTIN_DATASETS:
            labels = list(BUILTIN_DATASETS[workload["dataset"]]().labels or [])
    return labels


def _labels(workload: dict[str, Any], num_labels: int) -> list[str]:
    """``num_labels`` label names: the known ones when they fit, else ``LABEL_i``."""
    labels = _known_labels(workload)
    return labels if len(labels) == num_labels else [f"LABEL_{i}" for i in range(num_labels)]


def ensure_merged(
    spec: dict[str, Any], config: dict[str, Any], trial_id: int, root: Path, state: str = "?"
) -> Path:
    """``root/merged``: the trial's base model with its adapter folded into the weights
    (``PeftModel.merge_and_unload``), saved with ``save_pretrained`` beside the model folder's
    tokenizer and sentence-transformers pooling files, so it loads as a plain transformers model
    (built on first use). :class:`InvalidConfig` naming ``merged`` for an adapter that does not
    fold into the weights (bottleneck adapters, prefix or prompt tuning, mixes) or a trial with
    nothing to merge."""
    from autopeft.errors import InvalidConfig

    merged = root / "merged"
    if merged.is_dir() and any(merged.iterdir()):
        return merged
    workload = spec.get("workload") or {}
    if workload.get("full_finetune"):
        raise InvalidConfig(
            "a full fine-tuning trial keeps no adapter to merge (its checkpoint is adapter-only)",
            "merged",
        )
    adapter = ensure_peft_adapter(spec, config, trial_id, root)
    if adapter is None:
        from autopeft.api.errors import ApiError

        raise ApiError(
            404, "not_found", f"trial {trial_id} has no checkpoint to merge (state {state})"
        )
    peft_config = adapter / "adapter_config.json"
    if not peft_config.is_file():
        raise InvalidConfig(
            "this trial's adapter is not in peft's format (bottleneck adapters, prefix tuning or "
            "a mix of methods): only an adapter peft loads can be merged",
            "merged",
        )
    peft_type = json.loads(peft_config.read_text(encoding="utf-8")).get("peft_type")
    if peft_type not in MERGEABLE:
        raise InvalidConfig(
            f"a {peft_type} adapter adds inputs rather than weights: it cannot be merged into "
            f"the model (mergeable: {', '.join(MERGEABLE)})",
            "merged",
        )
    with _lock:
        if merged.is_dir() and any(merged.iterdir()):
            return merged
        import torch
        from peft import PeftModel

        from autopeft.trials import TrialContext
        from autopeft.trials.train import trainer_for

        meta = json.loads((adapter / "autopeft_config.json").read_text(encoding="utf-8"))
        trainer = trainer_for(
            {**workload, "quantization": None},
            dict(meta.get("config") or config),
            TrialContext(trial_id=trial_id, resources={"cpus": 1, "gpus": 0}),
        )
        num_labels = meta.get("num_labels") or 0
        base = trainer.load_base(num_labels, tuple(_labels(workload, num_labels)))
        model = PeftModel.from_pretrained(base.to("cpu"), str(adapter)).merge_and_unload()
        tmp = root / "merged.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with torch.no_grad():
            model.save_pretrained(str(tmp))
        source = Path(trainer.model_dir)
        from autopeft.trials.data.tokenized import TOKENIZER_FILES

        for name in (*TOKENIZER_FILES, *_POOLING_FILES):
            if (source / name).is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, tmp / name)
        pooling = meta.get("pooling", "model")
        if pooling == "mean" and not (tmp / "1_Pooling" / "config.json").is_file():
            # what detect_pooling reads: the sentence-transformers pooling config of mean tokens
            (tmp / "1_Pooling").mkdir(exist_ok=True)
            (tmp / "1_Pooling" / "config.json").write_text(
                json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False})
                + "\n",
                encoding="utf-8",
            )
        (tmp / "autopeft_merged.json").write_text(
            json.dumps(
                {
                    "format": "autopeft-merged",
                    "version": 1,
                    "config": meta.get("config"),
                    "pooling": pooling,
                    "task": meta.get("task"),
                    "peft_type": peft_type,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        tmp.rename(merged)
        return merged


def model_card(study: Any, trial: Any, merged: bool = False) -> str:
    """The ``README.md`` of an exported folder: where the point came from (study, trial, config),
    what it measured on validation and, when tested, on the held-out test split with 95% Wilson
    intervals, its trainable parameters, and how to load it."""
    from autopeft.api.services.front import wilson

    spec = study.spec or {}
    workload = spec.get("workload") or {}
    values, test = dict(trial.values or {}), dict(trial.test_values or {})
    model = workload.get("model") or "?"
    lines = [
        "---",
        f"library_name: {'transformers' if merged else 'peft'}",
        f"base_model: {model}",
        "tags: [autopeft]",
        "---",
        "",
        f"# {study.name}: trial {trial.number}" + (f" ({trial.label})" if trial.label else ""),
        "",
        f"Exported by autopeft from study {study.id} ({study.name!r}), trial {trial.id} "
        f"(number {trial.number}, {trial.kind}, state {trial.state}); "
        + ("the adapter merged into the base model's weights." if merged else "the adapter."),
        "",
        f"- base model: `{model}`; task: {workload.get('task') or 'classification'}; "
        f"dataset: `{workload.get('dataset') or '?'}`",
    ]
    if "trainable_params" in values:
        share = values.get("params_pct")
        lines.append(
            f"- trainable parameters: {int(values['trainable_params']):,}"
            + (f" ({share:.3g}% of the model)" if isinstance(share, (int, float)) else "")
        )
    if "epochs_trained" in values or trial.epochs_trained:
        lines.append(f"- epochs trained: {values.get('epochs_trained', trial.epochs_trained):.3g}")
    lines += ["", "## Metrics", "", "| split | metric | value | 95% interval | examples |"]
    lines.append("| --- | --- | --- | --- | --- |")

    def rows(split: str, metrics: dict[str, Any], examples: Any, prefix: str) -> None:
        for name in ("accuracy", "macro_f1", "exact_match", "loss", "perplexity"):
            value = metrics.get(prefix + name)
            if not isinstance(value, (int, float)):
                continue
            interval = ""
            counted = isinstance(examples, (int, float)) and examples >= 1
            if name in ("accuracy", "exact_match") and counted:
                low, high = wilson(float(value), int(examples))
                interval = f"[{low:.3f}, {high:.3f}]"
            n = f"{int(examples):,}" if isinstance(examples, (int, float)) else ""
            lines.append(f"| {split} | {name} | {value:.4f} | {interval} | {n} |")

    rows("validation", values, values.get("eval_examples"), "")
    if test:
        rows("test (held out)", test, test.get("test_examples"), "test_")
    else:
        lines.append("| test (held out) | not tested | | | |")
    lines += [
        "",
        "Selected on validation; the held-out test split is what to quote. Intervals are "
        "Wilson's for a share of the examples (one training run: seed variance not included).",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(trial.config, indent=1, sort_keys=True, default=str),
        "```",
        "",
        "## Load",
        "",
        "```python",
    ]
    if merged:
        lines += [
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "from autopeft.peft.pooling import apply_pooling, detect_pooling",
            "model = AutoModelForSequenceClassification.from_pretrained(FOLDER)",
            "apply_pooling(model, detect_pooling(FOLDER))  # mean pooling for sentence-transformers",
            "tokenizer = AutoTokenizer.from_pretrained(FOLDER)",
        ]
    else:
        lines += [
            "from peft import PeftModel  # adapter_config.json present: peft's format",
            "model = PeftModel.from_pretrained(base_model, FOLDER)",
            "# any folder: autopeft.load_adapter(base_model, FOLDER)",
        ]
    lines += ["```", ""]
    return "\n".join(lines)


def with_card(archive: bytes, card: str) -> bytes:
    """The zip ``archive`` with ``README.md`` set to ``card`` (replacing one already there)."""
    import io
    import zipfile

    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for item in src.infolist():
            if item.filename != "README.md":
                dst.writestr(item, src.read(item.filename))
        dst.writestr("README.md", card)
    return out.getvalue()


def merged_archive(folder: Path, card: str) -> Path:
    """``<folder>.zip`` beside ``folder`` (weights stored, not deflated: they do not compress),
    with ``card`` as its README.md; written once, then served from disk (a merged model is the
    size of the model)."""
    import zipfile

    target = folder.with_suffix(".zip")
    with _lock:
        if not target.is_file():
            tmp = folder.with_suffix(".zip.tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(folder).as_posix())
                zf.writestr("README.md", card)
            tmp.rename(target)
    return target
