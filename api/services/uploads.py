"""Receiving a dataset upload: a streamed multipart body written to disk, then a streamed check.

:func:`receive_multipart` feeds the request body, chunk by chunk, to python-multipart's parser:
the ``file`` part goes straight into a temporary file (hashed on the way, refused with a 413 as
soon as it passes the size limit), the few small text fields are kept in memory (bounded). Memory
use is a chunk, whatever the upload's size.

:func:`check_file` then reads the file once, streaming, as the trials will (same label rules as
``autopeft.trials.data``): encoding, header / columns, a value in every text and label column of
every row, at least two labels and not too many distinct ones. Errors are 422s naming the row and
the column (and the upload by its file name, never a server path).

:func:`check_sft_file` checks an SFT upload (``kind=sft``, or detected: a JSONL file whose first
record has ``prompt`` / ``completion`` or ``messages``) by the causal_lm trials' own rule
(``autopeft.trials.sft_data.record_problem``) on every record; its errors' ``field`` is the path
into the record (``completion``, ``messages.2.role``), ``file`` for a line that is not JSON.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.api.errors import ApiError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_FIELD_BYTES = 1024
FIELDS = ("name", "text_column", "label_column", "format", "encoding", "kind")
KINDS = ("classification", "sft")
MAX_LABELS = 1000
MAX_COLUMNS = 1000
CHUNK = 1 << 16


def _bad(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, "invalid_dataset", message, field)


@dataclass
class Received:
    path: Path | None = None  # the temporary file of the ``file`` part
    filename: str = ""
    size: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)


async def receive_multipart(request, tmp_dir: Path, max_bytes: int) -> Received:
    """Stream a ``multipart/form-data`` body into ``tmp_dir``; the caller removes ``path``."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(
            415,
            "unsupported_media_type",
            "upload the dataset as multipart/form-data with a part "
            "named 'file' (curl -F file=@data.csv ...)",
            "file",
        )
    out = Received()
    digest = hashlib.sha256()
    state: dict[str, Any] = {
        "headers": {},
        "name": None,
        "fh": None,
        "value": bytearray(),
        "header": b"",
        "hvalue": b"",
        "error": None,
    }

    def on_header_field(data, start, end):
        state["header"] += data[start:end]

    def on_header_value(data, start, end):
        state["hvalue"] += data[start:end]

    def on_header_end():
        state["headers"][state["header"].lower()] = state["hvalue"]
        state["header"], state["hvalue"] = b"", b""

    def on_headers_finished():
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == "file":
            if out.path is not None:
                state["error"] = _bad("give one file per upload", "file")
                return
            filename = disp.get(b"filename", b"").decode("utf-8", "replace")
            out.filename = os.path.basename(filename.replace("\\", "/"))[:255]
            fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
            out.path = Path(tmp)
            state["fh"] = os.fdopen(fd, "wb")
        elif name not in FIELDS:
            state["error"] = _bad(
                f"unknown form field {name[:50]!r} (known: file, {', '.join(FIELDS)})", name[:50]
            )

    def on_part_data(data, start, end):
        if state["error"] is not None:
            return
        chunk = data[start:end]
        if state["fh"] is not None:
            out.size += len(chunk)
            if out.size > max_bytes:
                state["error"] = ApiError(
                    413,
                    "too_large",
                    f"the dataset is larger than the server's limit of "
                    f"{max_bytes} bytes (AUTOPEFT_MAX_UPLOAD_BYTES)",
                    "file",
                )
                return
            digest.update(chunk)
            state["fh"].write(chunk)
        else:
            state["value"] += chunk
            if len(state["value"]) > MAX_FIELD_BYTES:
                state["error"] = _bad(
                    f"form field {state['name']!r} is longer than {MAX_FIELD_BYTES} bytes",
                    state["name"],
                )

    def on_part_end():
        if state["fh"] is not None:
            state["fh"].close()
            state["fh"] = None
        elif state["name"] in FIELDS and state["error"] is None:
            try:
                out.fields[state["name"]] = bytes(state["value"]).decode("utf-8")
            except UnicodeDecodeError:
                state["error"] = _bad(f"form field {state['name']!r} is not UTF-8", state["name"])
        state["headers"], state["value"] = {}, bytearray()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
            if state["error"] is not None:
                raise state["error"]
        parser.finalize()
    except ApiError:
        _discard(state, out)
        raise
    except Exception as err:
        _discard(state, out)
        if getattr(err, "status_code", None) == 413:  # the body limit of the middleware
            raise ApiError(
                413,
                "too_large",
                f"the dataset is larger than the server's limit of {max_bytes} bytes "
                "(AUTOPEFT_MAX_UPLOAD_BYTES)",
                "file",
            ) from None
        raise _bad(f"malformed multipart body: {type(err).__name__}", "file") from None
    if state["error"] is not None:
        _discard(state, out)
        raise state["error"]
    if out.path is None:
        raise _bad("no file: send the dataset as the form part 'file'", "file")
    out.sha256 = digest.hexdigest()
    return out


def _discard(state: dict, out: Received) -> None:
    if state.get("fh") is not None:
        state["fh"].close()
    if out.path is not None:
        out.path.unlink(missing_ok=True)
        out.path = None


# ------------------------------------------------------------------------------------- checking


@dataclass
class Schema:
    format: str
    encoding: str
    rows: int
    columns: list[str]
    text_column: list[str]
    label_column: str
    label_counts: dict[str, int]
    kind: str = "classification"  # or "sft": prompt / completion or chat messages records


def upload_format(filename: str, given: str | None) -> str:
    fmt = given or FORMATS.get(Path(filename).suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl"):
        raise _bad(
            f"cannot tell the format of {filename!r} from its suffix; give format=csv, tsv or jsonl",
            "format",
        )
    return fmt


def text_columns(value: str | None) -> list[str]:
    cols = [c.strip() for c in (value or "text").split(",")]
    if not 1 <= len(cols) <= 2 or not all(cols):
        raise _bad(
            "text_column must be a column name, or two names separated by a comma", "text_column"
        )
    return cols


def upload_kind(given: str | None) -> str | None:
    """The declared kind (None: detect it from the file)."""
    kind = (given or "").strip() or None
    if kind is not None and kind not in KINDS:
        raise _bad(f"kind must be one of {', '.join(KINDS)}, got {kind[:40]!r}", "kind")
    return kind


def detect_kind(path: Path, fmt: str, encoding: str) -> str:
    """``sft`` for a JSONL file whose first record has the fields of an SFT record (the trials'
    rule), else ``classification`` (whose check then says what is wrong with the file)."""
    from autopeft.trials.sft_data import record_source

    if fmt != "jsonl":
        return "classification"
    try:
        with open(path, encoding=encoding, errors="replace") as fh:
            for line in fh:
                if line.strip():
                    record = json.loads(line.lstrip("\ufeff"))
                    sft = isinstance(record, dict) and record_source(record) != "labelled"
                    return "sft" if sft else "classification"
    except (ValueError, RecursionError, LookupError):
        pass
    return "classification"


def check_sft_file(path: Path, filename: str, fmt: str, encoding: str) -> Schema:
    """Stream-check an SFT upload: every record a prompt / completion pair, or every record a chat
    (the first record decides which); :class:`ApiError` (422) naming the row and the field."""
    from autopeft.trials.data.sources import bom_problem, is_text_encoding
    from autopeft.trials.sft_data import record_problem, record_source

    if fmt != "jsonl":
        raise _bad(
            f"an SFT dataset is JSONL (records with 'prompt' and 'completion', or 'messages'), not "
            f"{fmt.upper()}",
            "kind",
        )
    if not is_text_encoding(encoding):
        raise _bad(f"unsupported text encoding {encoding[:40]!r}", "encoding")
    with open(path, "rb") as fh:
        problem = bom_problem(fh.read(4), encoding)
    if problem:
        raise _bad(f"{filename}: {problem}", "encoding")
    _check_decodes(path, filename, fmt, encoding, ["prompt", "messages"], "completion")
    source, columns, rows = None, [], 0
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    with open(path, encoding=enc, newline="") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            record = _json_record(line, filename, line_no)
            if not isinstance(record, dict):
                raise _bad(f"{filename}: row {line_no}: expected a JSON object", "file")
            if source is None:
                source = record_source(record)
                if source == "labelled":
                    shown = ", ".join(repr(k[:40]) for k in list(record)[:20])
                    raise _bad(
                        f"{filename}: row {line_no}: an SFT record has 'prompt' and 'completion', "
                        f"or 'messages'; this one has {shown or 'no fields'}",
                        "prompt",
                    )
                columns = list(record)[:MAX_COLUMNS]
            found = record_problem(record, source)
            if found is not None:
                where, message = found
                raise _bad(f"{filename}: row {line_no}, column {where!r}: {message}", where)
            rows += 1
    if source is None:
        raise _bad(f"{filename}: no examples (the file is empty)", "file")
    return Schema(fmt, encoding, rows, columns, [], "", {}, "sft")


def _label_order(counts: Counter) -> dict[str, int]:
    names = list(counts)
    if all(re.fullmatch(r"-?\d+", v) for v in names):
        names.sort(key=int)
    else:
        names.sort()
    return {n: counts[n] for n in names}


def check_file(
    path: Path, filename: str, fmt: str, encoding: str, texts: list[str], label: str
) -> Schema:
    """Stream-check an uploaded file; :class:`ApiError` (422) naming the row and column."""
    from autopeft.trials.data.sources import (  # the trials' own rules
        bom_problem,
        is_text_encoding,
        label_str,
    )

    if not is_text_encoding(encoding):
        raise _bad(
            f"unsupported text encoding {encoding[:40]!r} (supported: UTF-8/16/32, latin-1, the "
            "cp125x and ISO-8859 code pages, and the common CJK encodings)",
            "encoding",
        )
    with open(path, "rb") as fh:
        problem = bom_problem(fh.read(4), encoding)
    if problem:
        raise _bad(f"{filename}: {problem}", "encoding")
    _check_decodes(path, filename, fmt, encoding, texts, label)
    counts: Counter = Counter()
    rows = 0
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    with open(path, encoding=enc, newline="") as fh:
        if fmt == "jsonl":
            columns = None
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                record = _json_record(line, filename, line_no)
                if not isinstance(record, dict):
                    raise _bad(f"{filename}: row {line_no}: expected a JSON object", "file")
                if columns is None:
                    columns = list(record)[:MAX_COLUMNS]
                    _check_columns(filename, columns, texts, label)
                for column in texts:
                    if record.get(column) is None:
                        raise _missing(filename, line_no, column, label)
                value = record.get(label)
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise _missing(filename, line_no, label, label)
                rows += 1
                _count(counts, label_str(value), filename, line_no, label)
        else:
            reader = csv.reader(fh, delimiter="\t" if fmt == "tsv" else ",")
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise _bad(f"{filename}: the file is empty", "file") from None
            except csv.Error as err:
                raise _bad(f"{filename}: row 1: malformed {fmt.upper()} ({err})", "file") from None
            columns = header[:MAX_COLUMNS]
            _check_columns(filename, header, texts, label)
            positions = [header.index(c) for c in texts]
            label_pos = header.index(label)
            try:
                for record in reader:
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue
                    line = reader.line_num
                    for column, pos in zip(texts, positions):
                        if pos >= len(record):
                            raise _missing(filename, line, column, label)
                    if label_pos >= len(record) or not record[label_pos].strip():
                        raise _missing(filename, line, label, label)
                    rows += 1
                    _count(counts, label_str(record[label_pos]), filename, line, label)
            except csv.Error as err:
                raise _bad(
                    f"{filename}: row {reader.line_num}: malformed {fmt.upper()} ({err})", "file"
                ) from None
    if rows == 0 or columns is None:
        raise _bad(f"{filename}: no examples (only a header?)", "file")
    if len(counts) < 2:
        raise _bad(
            f"{filename}: column {label!r} has a single label value; classification needs two or more",
            "label_column",
        )
    return Schema(fmt, encoding, rows, list(columns), texts, label, _label_order(counts))


def _json_record(line: str, filename: str, line_no: int) -> Any:
    """One JSONL line parsed; refused (422) when it is not JSON or nests deeper than
    ``MAX_JSON_DEPTH`` (a record is a flat object of texts and a label)."""
    from autopeft.trials.data.readers import MAX_JSON_DEPTH, json_depth

    depth = json_depth(line)
    if depth > MAX_JSON_DEPTH:
        raise _bad(
            f"{filename}: row {line_no}: JSON nested {depth if depth < 10**6 else 'too'} deep (at "
            f"most {MAX_JSON_DEPTH}: a record is an object of texts and a label)",
            "file",
        )
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise _bad(f"{filename}: row {line_no}: not valid JSON ({err.msg})", "file") from None


def _count(counts: Counter, value: str, filename: str, line: int, label: str) -> None:
    counts[value] += 1
    if len(counts) > MAX_LABELS:
        raise _bad(
            f"{filename}: row {line}, column {label!r}: more than {MAX_LABELS} distinct labels (is it "
            "the label column?)",
            "label_column",
        )


def _missing(filename: str, line: int, column: str, label: str) -> ApiError:
    return _bad(
        f"{filename}: row {line}, column {column!r}: no value",
        "label_column" if column == label else "text_column",
    )


def _check_columns(filename: str, header: list[str], texts: list[str], label: str) -> None:
    if len(header) > MAX_COLUMNS:
        raise _bad(f"{filename}: more than {MAX_COLUMNS} columns", "file")
    for column in (*texts, label):
        if column not in header:
            field = "label_column" if column == label else "text_column"
            shown = ", ".join(repr(h[:40]) for h in header[:20])
            raise _bad(f"{filename}: no column {column!r}; its columns are {shown}", field)


def _check_decodes(
    path: Path, filename: str, fmt: str, encoding: str, texts: list[str], label: str
) -> None:
    """Decode the whole file in chunks; a bad byte names its row and (best guess) its column."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line, offset, header, tail = 1, 0, None, b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if header is None and (b"\n" in tail + chunk or not chunk):
                header = (tail + chunk).split(b"\n", 1)[0].decode(encoding, "replace")
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                # err.object is the decoder's pending bytes (part of a character, no newline) + chunk
                pos = max(0, min(err.start - (len(err.object) - len(chunk)), len(chunk)))
                line += chunk.count(b"\n", 0, pos)
                start = chunk.rfind(b"\n", 0, pos) + 1
                prefix = (tail + chunk[:pos] if start == 0 else chunk[start:pos]).decode(
                    encoding, "replace"
                )
                column = _column_at(fmt, header or "", prefix, (*texts, label))
                raise _bad(
                    f"{filename}: row {line}, column {column}: bytes that are not valid {encoding} "
                    f"(byte 0x{err.object[err.start]:02x}); re-encode the file or give encoding=...",
                    "encoding",
                ) from None
            except UnicodeError as err:  # a codec's own complaint (not about one byte)
                raise _bad(f"{filename}: cannot be read as {encoding}: {err}", "encoding") from None
            if not chunk:
                return
            line += chunk.count(b"\n")
            nl = chunk.rfind(b"\n")
            tail = chunk[nl + 1 :] if nl >= 0 else (tail + chunk)[-CHUNK:]
            offset += len(chunk)


def _column_at(fmt: str, header: str, prefix: str, wanted: tuple[str, ...]) -> str:
    if fmt == "jsonl":
        keys = re.findall(r'"((?:[^"\\]|\\.)*)"\s*:', prefix)
        return repr(keys[-1]) if keys else "?"
    delimiter = "\t" if fmt == "tsv" else ","
    names = next(csv.reader([header], delimiter=delimiter), [])
    fields = next(csv.reader(io.StringIO(prefix), delimiter=delimiter), [""])
    index = len(fields) - 1
    name = names[index].strip() if 0 <= index < len(names) else None
    return repr(name) if name else f"#{index + 1}"
