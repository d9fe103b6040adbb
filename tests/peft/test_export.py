"""export_adapter -> load_adapter round trips, and peft's own loader for LoRA / IA3 configs."""

from __future__ import annotations

import json

import pytest
import torch

from autopeft import InvalidConfig
from autopeft.peft import apply_peft, export_adapter, load_adapter
from tests.peft.conftest import batch, build, output

LORA_PER_LAYER = {
    "lora.rank.0": 4,
    "lora.rank.1": 2,
    "lora.targets": "q,v",
    "lora.alpha_ratio": 2.0,
    "lora.dropout": 0.05,
    "lr": 3e-4,
}
LORA_FIXED_ALPHA = {
    "lora.rank.0": 4,
    "lora.rank.1": 0,
    "lora.targets": "q,k,v,o,ffn_in,ffn_out",
    "lora.alpha": 6.0,
}
IA3 = {"ia3.targets": "k,v,ffn_out", "layers.1": False}
MIXED = {
    "lora.rank": 2,
    "serial.size": 3,
    "parallel.size": 4,
    "prefix.length.0": 2,
    "prefix.reparam": 8,
    "ia3.targets": "v",
}
PREFIX = {"prefix.length": 3}

PEFT_CASES = [
    ("bert", LORA_PER_LAYER),
    ("gpt2", LORA_PER_LAYER),
    ("llama", LORA_PER_LAYER),
    ("gpt2", LORA_FIXED_ALPHA),
    ("bert", LORA_FIXED_ALPHA),
    ("qwen2", LORA_FIXED_ALPHA),
    ("distilbert", LORA_PER_LAYER),
    ("roberta", LORA_PER_LAYER),
    ("bert", IA3),
    ("gpt2", IA3),
    ("llama", IA3),
    ("distilbert", IA3),
]
OWN_CASES = PEFT_CASES + [
    ("bert", MIXED),
    ("gpt2", MIXED),
    ("llama", MIXED),
    ("mistral", MIXED),
    ("roberta", PREFIX),
    ("distilbert", MIXED),
]


def _trained(arch, config, num_labels=3):
    """An adapted model whose PEFT weights and head are perturbed (as if trained)."""
    model = apply_peft(build(arch, num_labels), config)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("num_labels", [3, None], ids=["head", "bare"])
@pytest.mark.parametrize(
    "arch,config", OWN_CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(OWN_CASES)]
)
def test_export_load_round_trip(tmp_path, arch, config, num_labels):
    model = _trained(arch, config, num_labels)
    inputs = batch()
    export_adapter(model, config, tmp_path)
    meta = json.loads((tmp_path / "autopeft_config.json").read_text())
    assert meta["config"] == config and meta["format"] == "autopeft-adapter"
    loaded = load_adapter(build(arch, num_labels), tmp_path)
    with torch.no_grad():
        expected, got = output(model, inputs), output(loaded, inputs)
    assert (expected - got).abs().max() < 1e-5
    fresh = apply_peft(build(arch, num_labels), config)  # same base, untrained adapter: differs
    with torch.no_grad():
        assert (output(fresh, inputs) - expected).abs().max() > 1e-4


@pytest.mark.parametrize(
    "arch,config", PEFT_CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(PEFT_CASES)]
)
def test_peft_loads_lora_and_ia3_exports(tmp_path, arch, config):
    from peft import PeftModel

    model = _trained(arch, config)
    inputs = batch()
    export_adapter(model, config, tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (
        tmp_path / "adapter_model.safetensors"
    ).is_file()
    peft_model = PeftModel.from_pretrained(build(arch), str(tmp_path)).eval()
    with torch.no_grad():
        diff = (output(model, inputs) - output(peft_model, inputs)).abs().max()
    assert diff < 1e-5, diff


@pytest.mark.parametrize("config", [MIXED, PREFIX, {"lora.rank": 2, "ia3.targets": "k"}])
def test_non_peft_configs_write_own_format_only(tmp_path, config):
    export_adapter(_trained("bert", config), config, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    assert json.loads((tmp_path / "autopeft_config.json").read_text())["peft_format"] is False


def test_export_needs_the_applied_config(tmp_path):
    model = apply_peft(build("bert"), {"lora.rank": 2})
    with pytest.raises(InvalidConfig) as err:
        export_adapter(model, {"lora.rank": 4}, tmp_path)
    assert err.value.field == "config"
    with pytest.raises(InvalidConfig) as err:
        export_adapter(build("bert"), {"lora.rank": 4}, tmp_path)
    assert err.value.field == "model"


def test_load_rejects_other_shapes_and_dirs(tmp_path):
    model = _trained("bert", LORA_PER_LAYER)
    export_adapter(model, LORA_PER_LAYER, tmp_path / "a")
    with pytest.raises(InvalidConfig, match="shape"):
        load_adapter(build("bert", num_labels=5), tmp_path / "a")
    with pytest.raises(InvalidConfig) as err:
        load_adapter(build("bert"), tmp_path / "nothing")
    assert err.value.field == "directory"


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_peft_loads_bare_model_exports(tmp_path, arch):
    from peft import PeftModel

    model = _trained(arch, LORA_PER_LAYER, num_labels=None)
    export_adapter(model, LORA_PER_LAYER, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] is None
    peft_model = PeftModel.from_pretrained(build(arch, None), str(tmp_path)).eval()
    inputs = batch()
    with torch.no_grad():
        assert (output(model, inputs) - output(peft_model, inputs)).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_mean_pooling_travels_with_the_adapter(tmp_path, arch):
    from peft import PeftModel

    from autopeft.peft.pooling import apply_pooling

    model = _trained(arch, LORA_PER_LAYER)
    apply_pooling(model, "mean")
    inputs = batch()
    export_adapter(model, LORA_PER_LAYER, tmp_path)
    assert json.loads((tmp_path / "autopeft_config.json").read_text())["pooling"] == "mean"
    loaded = load_adapter(build(arch, 3), tmp_path)  # our loader re-applies the pooling
    base = apply_pooling(build(arch, 3), "mean")  # peft's, after apply_pooling
    peft_model = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    plain = PeftModel.from_pretrained(build(arch, 3), str(tmp_path)).eval()
    with torch.no_grad():
        expected = output(model, inputs)
        assert (output(loaded, inputs) - expected).abs().max() < 1e-5
        assert (output(peft_model, inputs) - expected).abs().max() < 1e-5
        assert (output(plain, inputs) - expected).abs().max() > 1e-4  # without it: another model


def test_mean_pooling_is_refused_for_decoders():
    from autopeft.peft.pooling import apply_pooling

    with pytest.raises(InvalidConfig) as err:
        apply_pooling(build("gpt2", 3), "mean")
    assert err.value.field == "workload.pooling"
