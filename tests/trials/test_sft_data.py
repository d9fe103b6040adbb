"""SFT data (autopeft.trials.sft_data): which tokens carry the loss, chat templates, truncation,
the label set, the cache, and errors that name the line."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from transformers import AutoTokenizer

from autopeft.errors import InvalidConfig
from autopeft.trials import data, sft_data
from tests.decoders import PROMPT, write_sft_jsonl


def _load(path, model, max_length=48, **kw):
    spec = data.data_spec(str(path))
    tokenizer = AutoTokenizer.from_pretrained(model)
    return sft_data.load_sft(spec, tokenizer, model, max_length, use_cache=False, **kw)[
        0
    ], tokenizer


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_loss_only_on_completion_tokens_which_end_with_eos(tiny_gpt2, tmp_path):
    path = _write(
        tmp_path / "a.jsonl",
        [
            {"prompt": "the car\nSentiment:", "completion": " positive"},
            {"prompt": "a long road today really\nSentiment:", "completion": " negative"},
        ],
    )
    tokens, tok = _load(path, tiny_gpt2)
    batch = tokens.batch(np.array([0, 1]))
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    for row, (prompt, completion) in enumerate(
        [
            ("the car\nSentiment:", " positive"),
            ("a long road today really\nSentiment:", " negative"),
        ]
    ):
        p = tok(prompt)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = len(p) + len(c)
        assert ids[row, :n].tolist() == p + c and mask[row].sum() == n
        assert (labels[row, : len(p)] == sft_data.IGNORE).all() and labels[
            row, len(p) : n
        ].tolist() == c
        assert (labels[row, n:] == sft_data.IGNORE).all() and (ids[row, n:] == tokens.pad_id).all()
    assert tok.pad_token_id is None and tokens.pad_id == tok.eos_token_id  # no pad token: EOS fills


def test_chat_template_renders_messages_and_bos_is_kept(tiny_llama, tmp_path):
    path = write_sft_jsonl(tmp_path / "chat.jsonl", 30, chat=True)
    tokens, tok = _load(path, tiny_llama)
    record = json.loads(path.read_text().splitlines()[0])
    prompt = tok.apply_chat_template(
        record["messages"][:1], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|assistant|>")
    ids = tokens.ids[tokens.offsets[0] : tokens.offsets[1]].tolist()
    n = tokens.prompt_lens[0]
    assert ids[:n] == tok(prompt, add_special_tokens=False)["input_ids"]
    completion = record["messages"][1]["content"] + "</s>"  # the template ends the turn with EOS
    assert (
        ids[n:] == tok(completion, add_special_tokens=False)["input_ids"]
        and ids[-1] == tok.eos_token_id
    )
    prompt_completion = write_sft_jsonl(tmp_path / "pc.jsonl", 30)
    tokens, tok = _load(prompt_completion, tiny_llama)
    assert tokens.ids[0] == tok.bos_token_id  # the tokenizer's BOS starts a prompt


def test_messages_without_a_chat_template_say_how_they_are_rendered(tiny_gpt2, tmp_path, caplog):
    path = write_sft_jsonl(tmp_path / "chat.jsonl", 30, chat=True)
    with caplog.at_level(logging.WARNING, logger="autopeft.trials.sft_data"):
        rows = sft_data.read_rows(
            data.data_spec(str(path)), AutoTokenizer.from_pretrained(tiny_gpt2)
        )
    assert "no chat template" in caplog.text
    first = json.loads(path.read_text().splitlines()[0])["messages"]
    assert rows.prompts[0] == f"user: {first[0]['content']}\nassistant:"
    assert rows.completions[0] == " " + first[1]["content"] and rows.end_token


def test_truncation_keeps_the_completion(tiny_gpt2, tmp_path):
    long = " ".join(["the car drives today"] * 10)
    path = _write(
        tmp_path / "a.jsonl",
        [
            {"prompt": long, "completion": " positive"},
            {"prompt": "car", "completion": " negative " * 20},
        ],
    )
    tokens, tok = _load(path, tiny_gpt2, max_length=8)
    assert tokens.lengths(np.array([0, 1])).tolist() == [8, 8]
    completion = tok(" positive", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    first = tokens.ids[:8].tolist()
    assert first[-len(completion) :] == completion and tokens.prompt_lens[0] == 8 - len(completion)
    assert (
        first[: tokens.prompt_lens[0]] == tok(long)["input_ids"][-tokens.prompt_lens[0] :]
    )  # cut from the left
    assert tokens.prompt_lens[1] == 1  # a completion alone too long: cut at its end


def test_free_text_completions_are_no_label_set():
    names, labels = sft_data.label_set([f" answer {i}" for i in range(40)])
    assert names == () and labels.tolist() == [0] * 40
    names, labels = sft_data.label_set([" yes", " no", "no", " yes "])
    assert names == ("no", "yes") and labels.tolist() == [1, 0, 0, 1]


def test_cache_is_reused_and_keyed_by_the_template(tiny_llama, small_csv, tmp_path):
    spec = data.data_spec(str(small_csv))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    a, hit_a = sft_data.load_sft(spec, tok, tiny_llama, 32, root=tmp_path)
    b, hit_b = sft_data.load_sft(spec, tok, tiny_llama, 32, root=tmp_path)
    c, hit_c = sft_data.load_sft(spec, tok, tiny_llama, 32, template=PROMPT, root=tmp_path)
    assert (hit_a, hit_b, hit_c) == (False, True, False)
    assert np.array_equal(a.ids, b.ids) and a.label_names == b.label_names == (
        "neg",
        "neutral",
        "pos",
    )
    assert not np.array_equal(a.ids, c.ids)


@pytest.mark.parametrize(
    "records, needle",
    [
        (
            [
                {"prompt": "a", "completion": " b"},
                {"prompt": "c", "completion": " d"},
                {"prompt": "e"},
            ],
            "line 3: no 'completion'",
        ),
        ([{"prompt": "a", "completion": " b"}, "{broken"], "line 2: not valid JSON"),
        ([{"prompt": 3, "completion": " b"}], "line 1: a non-string (int) 'prompt'"),
        ([{"prompt": "a", "completion": "  "}], "line 1: an empty 'completion'"),
        (
            [
                {
                    "messages": [
                        {"role": "assistant", "content": "hi"},
                        {"role": "user", "content": "x"},
                    ]
                }
            ],
            "line 1: the last message must be the assistant's",
        ),
        (
            [{"messages": [{"role": "user"}]}],
            "line 1: message 0 needs a string 'role' and 'content'",
        ),
        (
            [
                {
                    "messages": [
                        {"role": "bot", "content": "x"},
                        {"role": "assistant", "content": "y"},
                    ]
                }
            ],
            "line 1: message 0 has the unknown role 'bot'",
        ),
    ],
)
def test_bad_records_name_the_line(tiny_llama, tmp_path, records, needle):
    from autopeft.trials import validate_workload

    path = _write(tmp_path / "bad.jsonl", records)
    with pytest.raises(InvalidConfig) as err:
        _load(path, tiny_llama)
    assert needle in err.value.message and err.value.field == "workload.dataset"
    if needle.startswith("line 1"):  # the API's cheap check reads the first record
        with pytest.raises(InvalidConfig) as err:
            validate_workload(
                {
                    "kind": "peft",
                    "task": "causal_lm",
                    "model": str(tiny_llama),
                    "dataset": str(path),
                }
            )
        assert needle in err.value.message and err.value.field == "workload.dataset"


def test_a_jsonl_without_sft_or_classification_fields_is_refused(tiny_llama, tmp_path):
    from autopeft.trials import validate_workload

    path = _write(tmp_path / "other.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(InvalidConfig) as err:
        validate_workload(
            {"kind": "peft", "task": "causal_lm", "model": str(tiny_llama), "dataset": str(path)}
        )
    assert "'prompt' and 'completion', or 'messages'" in err.value.message
