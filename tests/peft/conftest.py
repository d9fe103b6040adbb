"""Tiny random transformers models built in memory, one per supported architecture family."""

from __future__ import annotations

import copy

import pytest
import torch

VOCAB = 100


def tiny_configs():
    from transformers import (
        BertConfig,
        DistilBertConfig,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        RobertaConfig,
    )

    return {
        "bert": BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=48,
        ),
        "roberta": RobertaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            pad_token_id=1,
        ),
        "distilbert": DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48
        ),
        "gpt2": GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=3,
            n_head=4,
            n_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        ),
        "llama": LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=40,
            pad_token_id=0,
            max_position_embeddings=64,
        ),
        "qwen2": Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=40,
            pad_token_id=0,
            max_position_embeddings=64,
        ),
        "mistral": MistralConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            intermediate_size=40,
            pad_token_id=0,
            max_position_embeddings=64,
        ),
    }


ARCHS = tuple(tiny_configs())


def build(arch: str, num_labels: int | None = 3, seed: int = 0, attn: str | None = None):
    """A fresh tiny model: sequence classification with ``num_labels``, or the bare model (None)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    config = copy.deepcopy(tiny_configs()[arch])
    if attn:
        config._attn_implementation = attn
    torch.manual_seed(seed)
    if num_labels is None:
        model = AutoModel.from_config(config)
    else:
        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(config)
    return model.eval()


def batch(seed: int = 1, length: int = 7, pad: bool = True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.long)
    if pad:
        mask[1, length - 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def output(model, inputs):
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def measured_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_grads(model, inputs) -> None:
    """Forward + backward; exactly the trainable parameters get a gradient."""
    model.zero_grad(set_to_none=True)
    out = output(model, inputs)
    if out.requires_grad:  # False only when nothing is trainable (an empty config on a bare model)
        (out.float() ** 2).mean().backward()
    else:
        assert not any(p.requires_grad for p in model.parameters())
    wrong = [n for n, p in model.named_parameters() if (p.grad is not None) != p.requires_grad]
    assert not wrong, f"grad presence differs from requires_grad for {wrong[:5]}"


def dead_after_steps(model, steps: int = 2) -> list[str]:
    """Train ``model`` ``steps`` SGD steps; the trainable parameters whose last gradient is missing
    or zero (a module off the forward's path, or one that a step left with no effect)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        (output(model, batch()).float() ** 2).mean().backward()
        opt.step()
    return [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)
