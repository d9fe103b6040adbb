"""Invalid PEFT configs raise InvalidConfig naming the key, in apply_peft and count_trainable alike."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autopeft import InvalidConfig
from autopeft.peft import apply_peft, count_trainable, num_layers
from autopeft.peft.config import parse_peft_config
from tests.peft.conftest import build, tiny_configs

# (config, field named by the error, text in the message); the tiny BERT has 3 layers
CASES = [
    ({"lora.foo": 1}, "lora.foo", "unknown PEFT key"),
    ({"lora.rank": -1}, "lora.rank", ">= 0"),
    ({"lora.rank.1": -4}, "lora.rank.1", ">= 0"),
    ({"lora.rank": 2.5}, "lora.rank", "integer"),
    ({"lora.rank": True}, "lora.rank", "integer"),
    ({"lora.rank": "8"}, "lora.rank", "integer"),
    ({"lora.rank": 4, "lora.targets": "q,x"}, "lora.targets", "unknown target"),
    ({"lora.rank": 4, "lora.targets": ""}, "lora.targets", "at least one"),
    ({"lora.rank": 4, "lora.rank.2": 8}, "lora.rank.2", "both"),
    ({"serial.size": 4, "serial.size.0": 8}, "serial.size.0", "both"),
    ({"lora.rank.3": 4}, "lora.rank.3", "out of range"),
    ({"layers.7": False}, "layers.7", "out of range"),
    ({"layers.1": "no"}, "layers.1", "true or false"),
    ({"layers.x": True}, "layers.x", "unknown PEFT key"),
    ({"lora.targets.1": "q"}, "lora.targets.1", "not per-layer"),
    ({"lora.alpha_ratio": 0}, "lora.alpha_ratio", "> 0"),
    ({"lora.alpha": -2.0}, "lora.alpha", "> 0"),
    ({"lora.dropout": 1.0}, "lora.dropout", "[0, 1)"),
    ({"serial.activation": "swish"}, "serial.activation", "unknown activation"),
    ({"parallel.scaling": -1.0}, "parallel.scaling", "> 0"),
    ({"parallel.size": 1.5}, "parallel.size", "integer"),
    ({"prefix.length": -3}, "prefix.length", ">= 0"),
    ({"prefix.reparam": -1}, "prefix.reparam", ">= 0"),
    ({"ia3.targets": "q"}, "ia3.targets", "unknown target"),
    ({"ia3.targets": "k,k"}, "ia3.targets", "duplicate"),
    (
        {"lora.rank": 2, "lora.targets": "ffn_gate"},
        "lora.targets",
        "has no ffn_gate projection",
    ),  # BERT has no gate
    ({"lora": 2}, "lora", "unknown PEFT key"),
]


@pytest.mark.parametrize("config,field,text", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_invalid_config_names_the_key(config, field, text):
    model = build("bert")
    for call in (
        lambda: apply_peft(model, config),
        lambda: count_trainable(config, model.config, 3),
    ):
        with pytest.raises(InvalidConfig) as err:
            call()
        assert err.value.field == field
        assert field in str(err.value) and text in str(err.value)
    # a failed apply leaves the model untouched
    assert all(p.requires_grad for p in model.parameters())


def test_non_peft_keys_are_ignored():
    config = {"lr": 1e-3, "epochs": 3, "scheduler": "cosine", "lora_rank": 99, "lora.rank": 2}
    assert count_trainable(config, tiny_configs()["bert"]) == count_trainable(
        {"lora.rank": 2}, tiny_configs()["bert"]
    )


def test_config_must_be_a_mapping():
    with pytest.raises(InvalidConfig) as err:
        parse_peft_config([("lora.rank", 2)], 3)
    assert err.value.field == "config"


def test_defaults_and_mask():
    spec = parse_peft_config(
        {"lora.rank.0": 4, "lora.rank.2": 8, "layers.2": False, "serial.size": 3}, 3
    )
    assert spec["lora"].rank == (4, 0, 0)  # layer 1 not given -> 0; layer 2 masked
    assert spec["serial"].size == (3, 3, 0)
    assert spec["lora"].targets == ("q", "v") and spec["lora"].scaling(4) == 2.0
    lora = parse_peft_config({"lora.alpha": 16, "lora.alpha_ratio": 1.0}, 3)["lora"]
    assert lora.scaling(4) == 4.0
    assert spec.methods == ("lora", "serial")


class Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)) for _ in range(2)]
        )
        self.proj_head = nn.Linear(8, 2)


def test_unknown_architecture_lists_modules():
    with pytest.raises(InvalidConfig) as err:
        apply_peft(Unknown(), {"lora.rank": 2})
    msg = str(err.value)
    assert err.value.field == "model"
    assert "Unknown" in msg and "blocks.0.0 (Linear (8, 8))" in msg and "proj_head" in msg


def test_unknown_model_config():
    from transformers import T5Config

    with pytest.raises(InvalidConfig) as err:
        count_trainable({"lora.rank": 2}, T5Config(num_layers=2))
    assert err.value.field == "model_config" and "t5" in str(err.value)


@pytest.mark.parametrize("arch,layers", [("bert", 3), ("gpt2", 3), ("llama", 2), ("distilbert", 2)])
def test_num_layers(arch, layers):
    assert num_layers(tiny_configs()[arch]) == layers


def test_num_layers_without_layer_count():
    with pytest.raises(InvalidConfig):
        num_layers({"hidden_size": 8})


def test_adapter_memory_bytes():
    from autopeft.peft import adapter_memory_bytes

    cfg = tiny_configs()["llama"]
    n = count_trainable({"lora.rank": 4}, cfg, 3)
    assert adapter_memory_bytes({"lora.rank": 4}, cfg, 3) == 16 * n
    assert adapter_memory_bytes({"lora.rank": 4}, cfg, 3, dtype_bytes=2) == 8 * n
    with pytest.raises(InvalidConfig):
        adapter_memory_bytes({"lora.rank": 4}, cfg, 3, dtype_bytes=3)


def test_prefix_needs_sdpa_or_eager():
    model = build("llama")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(InvalidConfig) as err:
        apply_peft(model, {"prefix.length": 2, "lora.rank": 2})
    assert err.value.field == "prefix.length" and "flex_attention" in str(err.value)
    assert all(p.requires_grad for p in model.parameters())  # untouched


def test_unknown_head_shape_is_refused_not_guessed():
    from transformers import ElectraConfig

    cfg = ElectraConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48
    )
    assert count_trainable({"lora.rank": 2}, cfg) == 2 * 2 * 2 * (32 + 32)  # body known
    with pytest.raises(InvalidConfig) as err:
        count_trainable({"lora.rank": 2}, cfg, num_labels=3)
    assert err.value.field == "num_labels"


def test_masked_lm_head_stays_frozen():
    from transformers import BertForMaskedLM

    from tests.peft.conftest import measured_trainable

    torch.manual_seed(0)
    model = apply_peft(BertForMaskedLM(tiny_configs()["bert"]), {"lora.rank": 2})
    assert measured_trainable(model) == count_trainable({"lora.rank": 2}, model.config)
