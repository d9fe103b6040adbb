"""Prompt tuning through peft (issue 35): the exact count and a gradient on every family, peft's
export giving the trained model's logits, a decoder's head reading each row's last token, and
what is refused, naming the key, before anything trains."""

from __future__ import annotations

import copy

import pytest
import torch

from autopeft import InvalidConfig
from autopeft.peft import apply_peft, count_trainable, export_adapter, load_adapter
from autopeft.peft.memory import estimate_memory
from autopeft.peft.peftlib import engine_of
from autopeft.peft.prompt import left_align
from tests.peft.conftest import (
    ARCHS,
    batch,
    build,
    check_grads,
    dead_after_steps,
    measured_trainable,
    output,
    tiny_configs,
)

DECODERS = ("gpt2", "llama", "qwen2", "mistral")


@pytest.mark.parametrize("init", ["random", "vocab"])
@pytest.mark.parametrize("num_labels", [3, None], ids=["head", "bare"])
@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_trains_with_the_predicted_count(arch, num_labels, init):
    config = {"prompt.length": 5, "prompt.init": init, "layers.0": False}  # the mask: no effect
    model = build(arch, num_labels)
    apply_peft(model, config)
    assert engine_of(model) == "peft"
    hidden = model.get_input_embeddings().weight.shape[1]
    predicted = count_trainable(config, model.config, num_labels)
    assert measured_trainable(model) == predicted
    assert predicted - count_trainable({}, model.config, num_labels) == 5 * hidden
    check_grads(model, batch())
    if init == "vocab":  # peft's SAMPLE_VOCAB: every virtual token is a row of the embeddings
        rows = model.get_input_embeddings().weight
        prompt = model.autopeft_prompt.embedding.weight
        assert all(any(torch.equal(p, r) for r in rows) for p in prompt)
    # one optimiser step later the prompt (and the head) still get a nonzero gradient
    dead = dead_after_steps(model)
    assert not dead, dead


def _train(model, steps=6):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for step in range(steps):
        opt.zero_grad()
        (output(model, batch(seed=step)).float() ** 2).mean().backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_loads_the_prompt_export_with_the_trained_logits(tmp_path, arch):
    """``PeftModel.from_pretrained`` on a pristine base gives the trained model's logits (a
    decoder's batch left-padded, as a user gives it to ``PeftModel``), and so does
    ``load_adapter``."""
    import json

    from peft import PeftModel

    config = {"prompt.length": 4}
    torch.manual_seed(1)
    model = _train(apply_peft(build(arch).train(), config))
    inputs = batch(seed=99)
    with torch.no_grad():
        want = output(model, inputs)
    export_adapter(model, config, tmp_path)
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["peft_type"] == "PROMPT_TUNING" and meta["num_virtual_tokens"] == 4
    peft_inputs = inputs
    if arch in DECODERS:
        _, mask, (ids,) = left_align(
            torch.zeros(*inputs["input_ids"].shape, 1),
            inputs["attention_mask"],
            inputs["input_ids"],
        )
        peft_inputs = {"input_ids": ids, "attention_mask": mask}
    loaded = PeftModel.from_pretrained(build(arch), str(tmp_path)).eval()
    with torch.no_grad():
        got = output(loaded, peft_inputs)
        own = output(load_adapter(build(arch), tmp_path).eval(), inputs)
    assert torch.allclose(want, got, atol=1e-5, rtol=1e-5), (want - got).abs().max()
    assert torch.allclose(want, own, atol=1e-6, rtol=1e-6)


def test_a_bare_prompted_model_exports_the_own_format_only(tmp_path):
    model = apply_peft(build("bert", None), {"prompt.length": 3})
    export_adapter(model, {"prompt.length": 3}, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    with torch.no_grad():
        want = output(model, batch())
        got = output(load_adapter(build("bert", None), tmp_path), batch())
    assert want.shape[1] == batch()["input_ids"].shape[1] + 3  # the virtual tokens' states too
    assert torch.equal(want, got)


@pytest.mark.parametrize("arch", DECODERS)
def test_a_decoder_reads_each_rows_last_token(arch):
    """Given embeddings, transformers' decoder classifiers read the last position; right padding
    is made left padding first, so a padded row's logits do not depend on its padding tokens."""
    model = _train(apply_peft(build(arch).train(), {"prompt.length": 3}))
    inputs = batch()
    assert inputs["attention_mask"][1, -1] == 0  # row 1 is right-padded
    other = {k: v.clone() for k, v in inputs.items()}
    other["input_ids"][1, -2:] = torch.tensor([5, 6])
    with torch.no_grad():
        a, b = output(model, inputs), output(model, other)
    assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def test_left_align_moves_padding_first():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    ids = torch.tensor([[7, 8, 9, 0, 0], [1, 2, 3, 4, 5], [0, 0, 4, 5, 6]])
    embeds = ids[..., None].float().expand(-1, -1, 2)
    moved, new_mask, (new_ids,) = left_align(embeds, mask, ids)
    assert new_ids.tolist() == [[0, 0, 7, 8, 9], [1, 2, 3, 4, 5], [0, 0, 4, 5, 6]]
    assert new_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert torch.equal(moved[..., 0], new_ids.float())


@pytest.mark.parametrize(
    "config,engine,field",
    [
        ({"prompt.length": 4, "lora.rank": 2}, "auto", "prompt.length"),
        ({"prompt.length": 4, "prefix.length": 2}, "auto", "prompt.length"),
        ({"prompt.length": 4}, "own", "peft_engine"),
        ({"prompt.length": -1}, "auto", "prompt.length"),
        ({"prompt.length": 4, "prompt.init": "text"}, "auto", "prompt.init"),
    ],
)
def test_prompt_configs_peft_cannot_take_are_refused(config, engine, field):
    model = build("bert")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidConfig) as err:
        apply_peft(model, config, engine)
    assert err.value.field == field
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if engine == "auto":
        with pytest.raises(InvalidConfig) as err:
            count_trainable(config, tiny_configs()["bert"], 3)
        assert err.value.field == field


def test_a_causal_lm_is_refused_naming_the_key():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_configs()["gpt2"])
    with pytest.raises(InvalidConfig) as err:
        apply_peft(model, {"prompt.length": 4})
    assert err.value.field == "prompt.length"


def test_prompt_memory_counts_the_longer_sequence():
    """Every layer keeps activations for ``max_length + prompt.length`` tokens: more than a LoRA
    on the last layer only, and growing with the prompt."""
    workload = {"batch_size": 8, "max_length": 32}
    cfg = tiny_configs()["bert"]
    short = estimate_memory({"prompt.length": 2}, cfg, workload).activations
    long = estimate_memory({"prompt.length": 32}, cfg, workload).activations
    last_layer_lora = estimate_memory({"lora.rank.2": 1}, cfg, workload).activations
    assert last_layer_lora < short < long


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_peft_prefix_tuning_does_not_give_a_classifiers_logits(arch):
    """Why a classifier's prefix is exported in the own format only. peft's prefix tuning, given
    exactly the classifier's keys and values, raises on sequence classifiers up to peft 0.21; peft
    0.22 runs them with the text after the prefix (positions ``P..P+n-1``): our logits with the
    text so shifted, not the classifier's own (positions ``0..n-1``). When this test fails, peft
    gives a classifier's logits and ``export._peft_prefix`` can admit classifiers."""
    import peft

    from autopeft.peft.export import peft_prefix_state
    from autopeft.peft.modelmap import map_model

    length = 3
    ours = apply_peft(build(arch), {"prefix.length": length})
    torch.manual_seed(5)
    with torch.no_grad():  # keys and values far from their init, so the prefix moves the logits
        for name, param in ours.named_parameters():
            if "prefix" in name:
                param.normal_(0.0, 1.0)
    config, embeddings = peft_prefix_state(ours, map_model(ours), "SEQ_CLS")
    theirs = peft.get_peft_model(build(arch), config)
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(embeddings)
    ours.eval(), theirs.eval()
    inputs = batch()
    with torch.no_grad():
        try:
            got = theirs(**inputs).logits
        except ValueError as err:  # peft <= 0.21
            assert "past key values" in str(err)
            return
        own = output(ours, inputs)
        positions = torch.arange(inputs["input_ids"].shape[1]) + length
        shifted = ours(**inputs, position_ids=positions.expand(2, -1)).logits
        untouched = output(build(arch).eval(), inputs)
    assert torch.allclose(got, shifted, atol=1e-5)
    assert (own - untouched).abs().max() > 1e-4  # the prefix acts on the classifier
    assert (got - own).abs().max() > 1e-4
