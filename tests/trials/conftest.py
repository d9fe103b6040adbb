"""Fixtures for the trial runner: a tiny random BERT with MiniLM's real tokenizer, small data."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

POSITIVE = ["great", "love", "wonderful", "excellent", "happy", "superb", "nice", "brilliant"]
NEGATIVE = ["awful", "hate", "terrible", "horrible", "sad", "poor", "nasty", "dreadful"]
FILLER = ["the", "car", "drives", "today", "really", "was", "a", "ride", "city", "road"]


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch, tmp_path_factory):
    """Tests share two cores with other work; caches go to a per-session folder."""
    torch.set_num_threads(1)
    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, minilm_path) -> Path:
    """A 2-layer, 32-wide random BERT saved like MiniLM (a bare BertModel: the
    classification head is newly initialised on load), with MiniLM's tokenizer files."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
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
