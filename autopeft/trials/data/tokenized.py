"""Tokenised examples and their on-disk cache.

``load_tokenized`` tokenises every example once (truncated to ``max_length``, not padded) and
caches the result under ``cache_dir()``, keyed by a content hash of the data, the column spec, the
tokenizer files and ``max_length``. ``FlatExamples`` is the flat storage (and its npz form) the
classification data (``TokenizedData``) and the SFT data (``autopeft.trials.sft_data``) share;
``TokenizedData.batch`` pads a batch (to its longest example or to ``max_length``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from autopeft.trials.data.readers import read_examples
from autopeft.trials.data.sources import DataSpec

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
    "tokenizer.model",  # Llama-style SentencePiece
)
E = TypeVar("E", bound="FlatExamples")


class FlatExamples:
    """Examples stored flat: example i's tokens are ``ids[offsets[i]:offsets[i+1]]`` and its
    label ``labels[i]`` (shared by the classification and the SFT data).

    Subclasses are dataclasses whose fields are arrays (``optional`` names those that may be
    None), ``label_names``, ``pad_id`` and ``fingerprint``: the cache key, which ``save`` does not
    store (it names the file).
    """

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    optional: ClassVar[tuple[str, ...]] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self, indices: np.ndarray) -> np.ndarray:
        return self.offsets[indices + 1] - self.offsets[indices]

    def save(self, file: Path) -> None:
        """Store the examples in ``file`` (npz) atomically: concurrent trials never read half a
        file."""
        arrays = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "fingerprint" or value is None:
                continue
            arrays[f.name] = (
                np.array(json.dumps(value)) if f.name == "label_names" else np.asarray(value)
            )
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls: type[E], file: Path, key: str) -> E:
        """The examples ``save`` stored in ``file``, their ``fingerprint`` ``key``; ``OSError``,
        ``ValueError`` or ``KeyError`` when ``file`` is not such a file."""
        values: dict[str, Any] = {"fingerprint": key}
        with np.load(file, allow_pickle=False) as z:
            for f in fields(cls):
                if f.name == "label_names":
                    values[f.name] = tuple(json.loads(str(z[f.name])))
                elif f.name == "pad_id":
                    values[f.name] = int(z[f.name])
                elif f.name != "fingerprint":
                    values[f.name] = z.get(f.name) if f.name in cls.optional else z[f.name]
        return cls(**values)


def load_or_build(
    cls: type[E], file: Path, key: str, build: Callable[[], E], use_cache: bool = True
) -> tuple[E, bool]:
    """``(examples, cache_hit)``: those stored in ``file`` when ``use_cache`` and it holds them (a
    corrupt entry is deleted), else ``build()``, then stored in ``file`` when ``use_cache``."""
    if use_cache and file.is_file():
        try:
            return cls.load(file, key), True
        except (OSError, ValueError, KeyError):
            file.unlink(missing_ok=True)  # a corrupt entry is rebuilt below
    examples = build()
    if use_cache:
        examples.save(file)
    return examples, False


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
    optional = ("type_ids",)

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
    *,
    use_cache: bool = True,
    root: Path | None = None,
) -> tuple[TokenizedData, bool]:
    """Tokenise every example of ``spec`` (or load it from the cache).

    Returns ``(data, cache_hit)``. ``tokenizer`` is a transformers tokenizer loaded from
    ``tokenizer_dir`` (whose files are part of the cache key).
    """
    key = fingerprint(spec, tokenizer_dir, max_length)
    file = (root or cache_dir()) / "tokenized" / f"{key}.npz"
    return load_or_build(
        TokenizedData, file, key, lambda: _tokenize(spec, tokenizer, max_length, key), use_cache
    )


def _tokenize(spec: DataSpec, tokenizer: Any, max_length: int, key: str) -> TokenizedData:
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
    return TokenizedData(
        ids, offsets, type_ids, raw.labels, raw.label_names, pad_token_id(tokenizer), key
    )
