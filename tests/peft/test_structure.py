"""Models found by structure where the fixed lists miss them (issue 33 item 1): DeBERTa-v2's
``query_proj`` / ``key_proj`` / ``value_proj`` blocks map, every method that can reach them trains
with the predicted count and a gradient on exactly its tensors, its classification head is counted
exactly, prefix tuning (which DeBERTa's own attention never reads) is refused naming the key, and
a model whose blocks cannot be found is refused at study validation naming ``workload.model``."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from autopeft import InvalidConfig
from autopeft.peft import apply_peft, count_trainable
from autopeft.peft.modelmap import check_structure, map_model
from tests.peft.conftest import VOCAB, batch, check_grads, measured_trainable, output


def deberta_config(num_labels: int = 3):
    from transformers import DebertaV2Config

    return DebertaV2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        pooler_hidden_size=32,
        num_labels=num_labels,
    )


def deberta(seed: int = 0):
    from transformers import DebertaV2ForSequenceClassification

    torch.manual_seed(seed)
    return DebertaV2ForSequenceClassification(deberta_config()).eval()


METHODS = {
    "lora_all": {"lora.rank": 2, "lora.targets": "all"},
    "lora_own": {"lora.rank": 2, "lora.targets": "q,v", "serial.size": 4},  # a mix: own modules
    "ia3": {"ia3.targets": "k,v,ffn_out"},
    "parallel": {"parallel.size": 4},
    "prompt": {"prompt.length": 3},
    "dora": {"lora.rank": 2, "lora.variant": "dora"},
    "vera": {"vera.rank": 4},
    "lokr": {"lokr.rank": 2, "lokr.targets": "q,v,o"},
    "adalora": {"adalora.rank": 4, "adalora.target_rank": 2},
}


def test_deberta_maps_by_structure():
    mmap = map_model(deberta())
    assert [layer.index for layer in mmap.layers] == [0, 1]
    projs = mmap.layers[0].projs
    assert projs["q"].path.endswith("attention.self.query_proj")
    assert projs["v"].path.endswith("attention.self.value_proj")
    assert projs["o"].path.endswith("attention.output.dense")
    assert projs["ffn_in"].path.endswith("intermediate.dense")
    assert (
        projs["ffn_out"].path.endswith("output.dense") and "attention" not in projs["ffn_out"].path
    )
    assert mmap.head == ["pooler", "classifier"]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_that_reaches_deberta_trains_as_predicted(name):
    config = METHODS[name]
    model = deberta()
    pristine = copy.deepcopy(model)
    apply_peft(model, config)
    assert measured_trainable(model) == count_trainable(config, deberta_config(), 3)
    check_grads(model, batch())
    # after a few steps the adapted model computes something else than the pristine one: the
    # modules are on the path the forward takes
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for step in range(3):
        opt.zero_grad()
        (output(model, batch(seed=step)).float() ** 2).mean().backward()
        opt.step()
    frozen_head = copy.deepcopy(model)
    for module in ("pooler", "classifier"):  # compare bodies: the head trained in both
        getattr(pristine, module).load_state_dict(getattr(frozen_head, module).state_dict())
    with torch.no_grad():
        moved = (output(model, batch()) - output(pristine, batch())).abs().max()
    assert moved > 1e-6, name


def test_prefix_tuning_is_refused_where_the_attention_is_the_models_own():
    model = deberta()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidConfig) as err:
        apply_peft(model, {"prefix.length": 3})
    assert err.value.field == "prefix.length" and "attention" in err.value.message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_check_structure_refuses_what_cannot_be_mapped():
    from transformers import BertConfig, DebertaConfig, T5Config

    check_structure(deberta_config())
    check_structure(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
        )
    )
    for config in (
        DebertaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
        ),  # DeBERTa v1: one fused, head-interleaved in_proj
        T5Config(d_model=32, num_layers=2, num_heads=4, d_ff=48, vocab_size=VOCAB),
    ):
        with pytest.raises(InvalidConfig) as err:
            check_structure(config)
        assert err.value.field == "workload.model"
        assert "found no list of transformer blocks" in err.value.message


def test_a_study_space_with_prefixes_on_deberta_is_refused(tmp_path):
    """Study validation: a DeBERTa model folder is accepted by structure, and a space that can
    sample a prefix on it is a 422 naming ``space.prefix.length`` (per-layer keys too)."""
    from autopeft.api.study import build_space, check_layers

    folder = tmp_path / "deberta"
    deberta_config().save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "deberta-v2"
    workload = {"kind": "peft", "model": str(folder)}
    ok = {"workload": workload, "space": {"peft": {"lora": {"rank": {"choices": [2, 4]}}}}}
    check_layers(ok, build_space(ok))
    for peft in (
        {"prefix": {"length": {"choices": [0, 4]}}},
        {"prefix": {"length": {"choices": [0, 4], "per_layer": True}}},
        {"prefix": {"length": 2}},
    ):
        spec = {"workload": workload, "space": {"peft": peft}}
        with pytest.raises(InvalidConfig) as err:
            check_layers(spec, build_space(spec))
        assert err.value.field == "space.prefix.length", peft
