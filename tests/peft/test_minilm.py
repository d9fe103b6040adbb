"""The real 6-layer MiniLM (BertModel checkpoint, no classifier weights: the head is fresh)."""

from __future__ import annotations

import copy

import pytest
import torch

from autopeft.peft import apply_peft, count_trainable, export_adapter, load_adapter
from tests.peft.conftest import check_grads, measured_trainable

CONFIGS = [
    {"lora.rank": 8},
    {
        "lora.rank.0": 16,
        "lora.rank.5": 2,
        "lora.targets": "q,k,v,o,ffn_in,ffn_out",
        "layers.3": False,
    },
    {
        "serial.size": 48,
        "parallel.size": 24,
        "prefix.length": 12,
        "prefix.reparam": 800,
        "layers.0": False,
    },
    {"ia3.targets": "k,v,ffn_out"},
]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(str(minilm_path), num_labels=3).eval()


@pytest.fixture(scope="module")
def inputs():
    ids = torch.randint(1000, 5000, (2, 12), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_known_lora_count(minilm):
    # LoRA r8 on q,v of MiniLM with a 2-label head: 6 x 2 x 8 x (384 + 384) + 384 x 2 + 2
    assert count_trainable({"lora.rank": 8}, minilm.config, num_labels=2) == 74_498


@pytest.mark.parametrize("config", CONFIGS, ids=["lora", "lora_per_layer", "sapa", "ia3"])
def test_minilm(minilm, inputs, config, tmp_path):
    model = apply_peft(copy.deepcopy(minilm), config)
    assert measured_trainable(model) == count_trainable(config, minilm.config, num_labels=3)
    head = {n for n, _ in minilm.named_parameters() if n.startswith("classifier.")}
    assert head == {"classifier.weight", "classifier.bias"}
    check_grads(model, inputs)
    with torch.no_grad():
        before, after = minilm(**inputs).logits, model(**inputs).logits
    if "prefix.length" in config:
        assert (before - after).abs().max() > 1e-4
    else:
        assert torch.allclose(before, after, atol=1e-5)
    export_adapter(model, config, tmp_path)
    loaded = load_adapter(copy.deepcopy(minilm), tmp_path)
    with torch.no_grad():
        assert (loaded(**inputs).logits - after).abs().max() < 1e-5


def test_minilm_peft_loader(minilm, inputs, tmp_path):
    from peft import PeftModel

    config = CONFIGS[1]
    model = apply_peft(copy.deepcopy(minilm), config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    export_adapter(model, config, tmp_path)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(minilm), str(tmp_path)).eval()
    with torch.no_grad():
        assert (peft_model(**inputs).logits - model(**inputs).logits).abs().max() < 1e-5
