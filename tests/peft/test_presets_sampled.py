"""Every shipped preset, 50 sampled configs each, on tiny BERT / GPT-2 / Llama and the real MiniLM:
apply_peft succeeds, forward + backward run, exactly the PEFT parameters and the head get
gradients, and count_trainable equals the measured count."""

from __future__ import annotations

import copy

import pytest
import torch

from autopeft import InvalidConfig
from autopeft.peft import apply_peft, count_trainable
from autopeft.space import load_space
from tests.peft.conftest import batch, build, check_grads, measured_trainable

PRESETS = ("autopeft_sapa", "lora_per_layer", "mixed", "lora_variants", "peft_methods")
#: presets of methods peft injects, refused for GPT-2 (fused q/k/v, Conv1D) naming the field
NOT_FOR_GPT2 = ("lora_variants", "peft_methods")
SAMPLES = 50


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(str(minilm_path), num_labels=3).eval()


def _check(model, pristine_ids, config, inputs, num_labels=3):
    head = {
        id(p)
        for name in ("classifier", "score")
        if hasattr(model, name)
        for p in getattr(model, name).parameters()
    }
    apply_peft(model, config)
    for n, p in model.named_parameters():
        if n.split(".")[-2] == "ranknum":  # AdaLoRA's rank count: a frozen constant
            continue
        assert p.requires_grad == (id(p) not in pristine_ids or id(p) in head), (n, config)
    assert measured_trainable(model) == count_trainable(config, model.config, num_labels), config
    check_grads(model, inputs)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_on_tiny(preset, arch):
    if arch == "gpt2" and preset in NOT_FOR_GPT2:
        with pytest.raises(InvalidConfig) as err:
            load_space(preset, build(arch).config)
        assert err.value.field == "peft.lora.targets"
        return
    space = load_space(preset, build(arch).config)
    inputs = batch(length=6)
    for config in space.sample(SAMPLES, seed=1):
        model = build(arch)
        _check(model, {id(p) for p in model.parameters()}, config, inputs)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_on_minilm(preset, minilm):
    space = load_space(preset, minilm.config)
    inputs = {
        "input_ids": torch.tensor(
            [[101, 2023, 2003, 1037, 3231, 102], [101, 2178, 2028, 102, 0, 0]]
        ),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
    }
    for config in space.sample(SAMPLES, seed=2):
        model = copy.deepcopy(minilm)
        _check(model, {id(p) for p in model.parameters()}, config, inputs)
