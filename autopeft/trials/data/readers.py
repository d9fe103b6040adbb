"""Reading a dataset's examples: CSV / TSV, JSONL and folder-per-class files, checked.

``read_examples`` parses the file of a ``DataSpec`` and checks it; bad data raises
``InvalidConfig`` naming the file and the column (missing column, empty file, a label outside the
declared set, bytes that do not decode). ``check_header`` is the cheap check validation makes:
the first record has the needed columns.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autopeft.errors import InvalidConfig
from autopeft.trials.data.sources import DataSpec, label_str


@dataclass
class RawData:
    """A dataset's examples as read: texts (one or two per example) and label indices."""

    texts: list[tuple[str, ...]]
    labels: np.ndarray  # int64 index into label_names
    label_names: tuple[str, ...]


def decode(spec: DataSpec, path: Path, data: bytes) -> str:
    """``data`` (read from ``path``) as text in ``spec.encoding`` (a UTF-8 BOM dropped);
    ``InvalidConfig`` naming the line and column of the first byte that does not decode."""
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
        text = decode(spec, spec.path, data)
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


#: deepest nesting a JSONL record may have (its values are texts, labels or chat messages)
MAX_JSON_DEPTH = 32
_JSON_TOKENS = re.compile(r'\\.|[\[\]{}"]', re.S)


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` / ``{`` in a JSON text, outside strings (counted without
    parsing, so no nesting can exhaust the parser's stack)."""
    depth = deepest = 0
    in_string = False
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token[0] == "\\":  # an escape: only strings hold them
            continue
        if token == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _json_line(spec: DataSpec, line: str, line_no: int) -> Any:
    """One JSONL line's value (``InvalidConfig`` naming the line when it is not JSON, or nests
    deeper than :data:`MAX_JSON_DEPTH`)."""
    if json_depth(line) > MAX_JSON_DEPTH:
        raise InvalidConfig(
            f"{spec.path}: line {line_no}: JSON nested deeper than {MAX_JSON_DEPTH}",
            field="workload.dataset",
        )
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise InvalidConfig(
            f"{spec.path}: line {line_no}: not valid JSON ({err.msg})", field="workload.dataset"
        ) from None


def jsonl_record(spec: DataSpec, line: str, line_no: int) -> dict[str, Any]:
    """One JSONL line as an object (``InvalidConfig`` naming the line otherwise)."""
    record = _json_line(spec, line, line_no)
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
    values = [label_str(r[2]) for r in rows]
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
    line = decode(spec, spec.path, first)
    if spec.format == "jsonl":
        record = _json_line(spec, line, 1)
        header = list(record) if isinstance(record, dict) else []
    else:
        delimiter = "\t" if spec.format == "tsv" else ","
        header = [h.strip() for h in next(csv.reader([line], delimiter=delimiter), [])]
    _check_columns(spec, header)
