"""Data of the ``causal_lm`` task: supervised fine-tuning (SFT) examples, each a prompt and a
completion; the loss is taken on the completion tokens only.

Where the examples come from (:func:`sft_source`, decided by the dataset alone):

* ``prompt_completion``: a JSONL file whose records have the string fields ``prompt`` and
  ``completion``;
* ``messages``: a JSONL file whose records have ``messages``, a list of ``{"role", "content"}``
  (roles :data:`ROLES`) whose last message is the assistant's. The prompt is the conversation before it rendered with
  the tokenizer's chat template (``add_generation_prompt=True``), the completion what the full
  rendering adds to it (the template's end-of-turn included). A tokenizer without a chat
  template renders ``role: content`` lines and ``assistant:`` (a warning says so);
* ``labelled``: any classification dataset (built-in, CSV / TSV, JSONL with text and label
  columns), as generation: prompt ``workload.prompt_template`` (default :data:`PROMPT_TEMPLATE`)
  with ``{text}`` (a sentence pair joined by a newline), completion ``" " + label``.

Tokens. The prompt is encoded as the tokenizer encodes a text (its special tokens included,
e.g. a Llama-style BOS); the completion without special tokens, followed by the end token (EOS,
else SEP; a chat-template completion carries its own). Longer than ``max_length``: prompt tokens
are dropped from the left; a completion alone longer than ``max_length - 1`` is cut at its end.
Batches are right-padded with the tokenizer's pad token (EOS, else 0, when it has none: padded
positions are masked out of attention and loss, so any id does).

Label set. When the completions take few distinct values (at most :data:`LABEL_SET_MAX`, on
average at least :data:`LABEL_SET_MIN_EACH` examples each; always for ``labelled``), they are a
label set: the train / validation / test split is stratified by it, and exact match (greedy
decoding reproduces the completion) is the classification accuracy of the generative model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autopeft.errors import InvalidConfig
from autopeft.trials.data import readers, tokenized
from autopeft.trials.data.sources import DataSpec

log = logging.getLogger(__name__)

SOURCES = ("prompt_completion", "messages", "labelled")
ROLES = ("system", "user", "assistant", "tool")  # of a chat record's messages
PROMPT_TEMPLATE = "{text}\nAnswer:"
LABEL_SET_MAX = 32
LABEL_SET_MIN_EACH = 2
IGNORE = -100  # label of positions outside the completion (torch's ignore_index)
CACHE_FORMAT = 1
_CHAT_FILES = ("chat_template.jinja", "chat_template.json")


def sft_source(spec: DataSpec) -> str:
    """Which of :data:`SOURCES` ``spec`` holds; reads only a JSONL file's first record."""
    if spec.format != "jsonl":
        return "labelled"
    record, _ = _first_record(spec)
    return record_source(record)


def record_source(record: dict[str, Any]) -> str:
    """Which of :data:`SOURCES` a JSONL file holds, from its first record (the uploads' rule too)."""
    if "messages" in record:
        return "messages"
    if "prompt" in record or "completion" in record:
        return "prompt_completion"
    return "labelled"


def _first_record(spec: DataSpec) -> tuple[dict[str, Any], int]:
    with open(spec.path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if raw.strip():
                return readers.jsonl_record(
                    spec, readers.decode(spec, spec.path, raw), line_no
                ), line_no
    raise InvalidConfig(f"{spec.path}: the file is empty", field="workload.dataset")


def check_first(spec: DataSpec) -> str:
    """Cheap validation (the API's, before 201): the source and its first record's fields."""
    source = sft_source(spec)
    if source == "labelled":
        if spec.format != "folders":
            try:
                readers.check_header(spec)
            except InvalidConfig as err:
                if spec.format != "jsonl":
                    raise
                raise InvalidConfig(
                    f"{err.message}; a causal_lm JSONL dataset has records with 'prompt' and "
                    "'completion', or 'messages', or the text and label columns of a "
                    "classification dataset",
                    field=err.field,
                ) from None
    else:
        record, line_no = _first_record(spec)
        _pair(spec, record, line_no) if source == "prompt_completion" else _messages(
            spec, record, line_no
        )
    return source


def record_problem(record: dict[str, Any], source: str) -> tuple[str, str] | None:
    """What is wrong with one ``prompt_completion`` or ``messages`` record: ``(field, message)``,
    the field a dotted path into the record (``completion``, ``messages.2.role``); None when it is
    fine. The one rule of both the trials and the API's upload check."""
    if source == "prompt_completion":
        for key in ("prompt", "completion"):
            value = record.get(key)
            if not isinstance(value, str):
                what = "no" if value is None else f"a non-string ({type(value).__name__})"
                return key, (
                    f"{what} {key!r} (each record needs a string 'prompt' and 'completion')"
                )
        if not record["completion"].strip():
            return "completion", "an empty 'completion'"
        return None
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "'messages' must be a non-empty list of {'role', 'content'}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages.{i}", f"message {i} needs a string 'role' and 'content'"
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                return f"messages.{i}.{key}", f"message {i} needs a string 'role' and 'content'"
        if m["role"] not in ROLES:
            return f"messages.{i}.role", (
                f"message {i} has the unknown role {m['role'][:40]!r} (roles: {', '.join(ROLES)})"
            )
    last = len(messages) - 1
    if messages[-1]["role"] != "assistant":
        return f"messages.{last}.role", (
            "the last message must be the assistant's (its content is the completion trained "
            f"on), got role {messages[-1]['role']!r}"
        )
    if not messages[-1]["content"].strip():
        return f"messages.{last}.content", "the assistant's last message is empty"
    return None


def _check_record(spec: DataSpec, record: dict[str, Any], line_no: int, source: str) -> None:
    problem = record_problem(record, source)
    if problem is not None:
        raise InvalidConfig(f"{spec.path}: line {line_no}: {problem[1]}", field="workload.dataset")


def _pair(spec: DataSpec, record: dict[str, Any], line_no: int) -> tuple[str, str]:
    _check_record(spec, record, line_no, "prompt_completion")
    return record["prompt"], record["completion"]


def _messages(spec: DataSpec, record: dict[str, Any], line_no: int) -> list[dict[str, str]]:
    _check_record(spec, record, line_no, "messages")
    return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]


# ------------------------------------------------------------------------------ reading
@dataclass
class Rows:
    lines: list[int]
    prompts: list[str]
    completions: list[str]
    label_names: tuple[str, ...]  # the label set, () when the completions are free text
    labels: np.ndarray  # index into label_names per example (zeros without a label set)
    special_prompt: bool  # whether the prompt is encoded with the tokenizer's special tokens
    end_token: bool  # whether the completion gets the end token appended


def read_rows(spec: DataSpec, tokenizer: Any, template: str | None = None) -> Rows:
    """Every example of ``spec`` as prompt / completion text; ``InvalidConfig`` on bad data."""
    source = sft_source(spec)
    if source == "labelled":
        raw = readers.read_examples(spec)
        fmt = template or PROMPT_TEMPLATE
        prompts = [fmt.format(text="\n".join(texts)) for texts in raw.texts]
        completions = [" " + raw.label_names[i] for i in raw.labels]
        return Rows(
            list(range(1, len(prompts) + 1)),
            prompts,
            completions,
            raw.label_names,
            raw.labels,
            True,
            True,
        )
    text = readers.decode(spec, spec.path, spec.path.read_bytes())
    lines, prompts, completions = [], [], []
    chat = getattr(tokenizer, "chat_template", None)
    if source == "messages" and not chat:
        log.warning(
            "the tokenizer has no chat template: messages are rendered as 'role: content' lines and "
            "'assistant:'"
        )
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = readers.jsonl_record(spec, line, line_no)
        if source == "prompt_completion":
            prompt, completion = _pair(spec, record, line_no)
        else:
            prompt, completion = _render(
                spec, tokenizer, _messages(spec, record, line_no), line_no, chat
            )
        lines.append(line_no)
        prompts.append(prompt)
        completions.append(completion)
    if not lines:
        raise InvalidConfig(f"{spec.path}: no examples", field="workload.dataset")
    names, labels = label_set(completions)
    return Rows(
        lines,
        prompts,
        completions,
        names,
        labels,
        source == "prompt_completion" or not chat,
        source == "prompt_completion" or not chat,
    )


def _render(spec, tokenizer, messages, line_no: int, chat) -> tuple[str, str]:
    if not chat:
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages[:-1]) + "assistant:"
        return prompt, " " + messages[-1]["content"]
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise InvalidConfig(
            f"{spec.path}: line {line_no}: the tokenizer's chat template does not render the "
            "conversation as its prompt followed by the assistant's answer, so the completion "
            "cannot be told apart; use prompt / completion records",
            field="workload.dataset",
        )
    return prompt, full[len(prompt) :]


def label_set(completions: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """``(names, index per completion)`` when the (stripped) completions form a label set, else
    ``((), zeros)``."""
    stripped = [c.strip() for c in completions]
    names = tuple(sorted(set(stripped)))
    if (
        len(names) > LABEL_SET_MAX
        or len(stripped) < LABEL_SET_MIN_EACH * len(names)
        or len(names) < 2
    ):
        return (), np.zeros(len(completions), dtype=np.int64)
    index = {n: i for i, n in enumerate(names)}
    return names, np.fromiter((index[c] for c in stripped), dtype=np.int64, count=len(stripped))


# ------------------------------------------------------------------------------ tokens
@dataclass
class SftData(tokenized.FlatExamples):
    """Tokenised SFT examples, flat: example i is ``ids[offsets[i]:offsets[i+1]]``, of which the
    first ``prompt_lens[i]`` tokens are the prompt and the rest the completion. ``labels`` /
    ``label_names``: the label set (see the module docstring), used to stratify the split."""

    ids: np.ndarray
    offsets: np.ndarray
    prompt_lens: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    pad_id: int
    fingerprint: str

    def completion_tokens(self, indices: np.ndarray) -> int:
        return int(np.sum(self.lengths(indices) - self.prompt_lens[indices]))

    def batch(self, indices: np.ndarray, pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Right-padded ``input_ids`` / ``attention_mask`` and ``labels``: the token id at completion
        positions, :data:`IGNORE` elsewhere (prompt and padding). The model predicts position t from
        positions before t, so the trainer shifts (see ``autopeft.trials.causal``)."""
        starts = self.offsets[indices]
        lengths = self.offsets[indices + 1] - starts
        width = int(pad_to) if pad_to else int(lengths.max())
        pos = np.arange(width)[None, :]
        mask = pos < lengths[:, None]
        gather = np.where(mask, starts[:, None] + pos, 0)
        ids = np.where(mask, self.ids[gather], self.pad_id).astype(np.int64)
        completion = mask & (pos >= self.prompt_lens[indices][:, None])
        return {
            "input_ids": ids,
            "attention_mask": mask.astype(np.int64),
            "labels": np.where(completion, ids, IGNORE).astype(np.int64),
        }


def end_token_id(tokenizer: Any) -> int | None:
    """The token that ends a completion: EOS, else SEP, else None."""
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def tokenize(
    rows: Rows, tokenizer: Any, max_length: int, path: Path | str = ""
) -> tuple[np.ndarray, ...]:
    """``(ids, offsets, prompt_lens)`` of ``rows`` truncated to ``max_length`` (see the module docstring)."""
    prompts = tokenizer(
        rows.prompts, add_special_tokens=rows.special_prompt, return_attention_mask=False
    )["input_ids"]
    completions = tokenizer(
        rows.completions, add_special_tokens=False, return_attention_mask=False
    )["input_ids"]
    end = end_token_id(tokenizer) if rows.end_token else None
    ids, offsets, prompt_lens = [], [0], []
    for line, p, c in zip(rows.lines, prompts, completions):
        c = list(c) + ([end] if end is not None else [])
        c = c[: max_length - 1]
        p = list(p)[-(max_length - len(c)) :] if p else []
        if not p:
            raise InvalidConfig(
                f"{path}: line {line}: an empty prompt, and the tokenizer adds no token before it: "
                "nothing to predict the completion's first token from",
                field="workload.dataset",
            )
        ids.extend(p)
        ids.extend(c)
        offsets.append(len(ids))
        prompt_lens.append(len(p))
    return (
        np.asarray(ids, dtype=np.int32),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(prompt_lens, dtype=np.int64),
    )


def fingerprint(spec: DataSpec, tokenizer_dir: Path, max_length: int, template: str | None) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(["sft", CACHE_FORMAT, template]).encode())
    digest.update(tokenized.fingerprint(spec, tokenizer_dir, max_length).encode())
    for name in _CHAT_FILES:
        file = Path(tokenizer_dir) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:32]


def load_sft(
    spec: DataSpec,
    tokenizer: Any,
    tokenizer_dir: Path,
    max_length: int,
    template: str | None = None,
    *,
    use_cache: bool = True,
    root: Path | None = None,
) -> tuple[SftData, bool]:
    """Read and tokenise every example (or load them from the cache under ``root or
    tokenized.cache_dir()``, keyed by data, tokenizer files, ``max_length`` and template). Returns
    ``(data, cache_hit)``."""
    key = fingerprint(spec, tokenizer_dir, max_length, template)
    file = (root or tokenized.cache_dir()) / "sft" / f"{key}.npz"
    return tokenized.load_or_build(
        SftData, file, key, lambda: _build(spec, tokenizer, max_length, template, key), use_cache
    )


def _build(
    spec: DataSpec, tokenizer: Any, max_length: int, template: str | None, key: str
) -> SftData:
    rows = read_rows(spec, tokenizer, template)
    ids, offsets, prompt_lens = tokenize(rows, tokenizer, max_length, spec.path)
    return SftData(
        ids,
        offsets,
        prompt_lens,
        rows.labels,
        rows.label_names,
        tokenized.pad_token_id(tokenizer),
        key,
    )
