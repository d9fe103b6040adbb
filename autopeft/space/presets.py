"""Loading spaces from preset names, YAML files or mappings."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autopeft.errors import InvalidConfig
from autopeft.space.space import SearchSpace

_PRESET_PACKAGE = "autopeft.search_spaces"


def list_presets() -> list[str]:
    """Names of the presets shipped in ``search_spaces/``."""
    root = resources.files(_PRESET_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    path = resources.files(_PRESET_PACKAGE) / f"{name}.yaml"
    if not path.is_file():
        raise InvalidConfig(
            f"unknown search space {name!r}; presets: {', '.join(list_presets())}, "
            "or give a path to a YAML file",
            "space",
        )
    return Path(str(path))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML, turning syntax errors into :class:`InvalidConfig` with file and line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InvalidConfig(f"invalid YAML in {source}{where}: {problem}", source) from None


def load_space(
    name_or_path: str | Path | dict, model_config: Any = None, num_layers: int | None = None
) -> SearchSpace:
    """Load a preset by name, a YAML file by path, or a space mapping.

    Per-layer parameters are expanded for the layer count of ``model_config`` (a transformers
    config); a per-layer space loaded without one (or ``num_layers``) raises InvalidConfig.
    """
    if isinstance(name_or_path, dict):
        return SearchSpace.from_dict(name_or_path, model_config=model_config, num_layers=num_layers)
    text_path = Path(name_or_path)
    if text_path.suffix in (".yaml", ".yml") or text_path.is_file():
        if not text_path.is_file():
            raise InvalidConfig(f"no such space file: {text_path}", "space")
        source = str(text_path)
    else:
        text_path = preset_path(str(name_or_path))
        source = f"preset {name_or_path}"
    try:
        text = text_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InvalidConfig(f"{source} is not UTF-8 text: {err}", source) from None
    data = parse_yaml(text, source)
    if data is None:
        raise InvalidConfig(f"{source} is empty", source)
    space = SearchSpace.from_dict(data, model_config=model_config, num_layers=num_layers)
    if space.name is None:
        space.name = text_path.stem
    return space
