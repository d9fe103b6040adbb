"""Decoder LMs as ``AutoModelForCausalLM`` (the causal_lm task): every preset's sampled configs on
GPT-2 (tied embeddings, fused qkv), Llama (GQA, tied and untied), Qwen2 (qkv bias) and Mistral (GQA
4/1): the LM head stays frozen and count_trainable equals the measured count; the ``all`` LoRA
target; LoRA / IA3 exports that peft's AutoPeftModelForCausalLM loads with the same logits."""

from __future__ import annotations

import copy

import pytest
import torch

from autopeft import InvalidConfig
from autopeft.peft import apply_peft, count_trainable, export_adapter
from autopeft.space import list_presets, load_space
from tests.peft.conftest import batch, check_grads, measured_trainable, tiny_configs

SAMPLES = 15


def causal_configs():
    configs = {
        k: v for k, v in tiny_configs().items() if k in ("gpt2", "llama", "qwen2", "mistral")
    }
    tied = copy.deepcopy(configs["llama"])
    tied.tie_word_embeddings = True
    configs["llama"].tie_word_embeddings = False
    # as the real GPT-2: the text follows the prefix, and the presets' prefixes reach 768
    configs["gpt2"].n_positions = 1024
    return {**configs, "llama_tied": tied}


CAUSAL = tuple(causal_configs())


def build_causal(arch: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(copy.deepcopy(causal_configs()[arch])).eval()


def test_tied_and_untied_as_built():
    for arch, tied in (("gpt2", True), ("llama_tied", True), ("llama", False)):
        model = build_causal(arch)
        same = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        assert same == tied, arch


@pytest.mark.parametrize("arch", CAUSAL)
@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_preset_on_causal_lm(preset, arch):
    if arch == "gpt2" and preset in ("lora_variants", "peft_methods"):  # peft-only on fused q/k/v
        with pytest.raises(InvalidConfig) as err:
            load_space(preset, causal_configs()[arch])
        assert err.value.field == "peft.lora.targets"
        return
    space = load_space(preset, causal_configs()[arch])
    inputs = batch(length=6)
    for config in space.sample(SAMPLES, seed=3):
        model = build_causal(arch)
        pristine = {id(p) for p in model.parameters()}
        if config.get("prompt.length"):  # prompt tuning is for classifiers (it shifts positions)
            with pytest.raises(InvalidConfig) as err:
                apply_peft(model, config)
            assert err.value.field == "prompt.length"
            continue
        apply_peft(model, config)
        assert not model.get_output_embeddings().weight.requires_grad
        for n, p in model.named_parameters():
            if n.split(".")[-2] == "ranknum":  # AdaLoRA's rank count: a frozen constant
                continue
            assert p.requires_grad == (id(p) not in pristine), (n, config)
        assert measured_trainable(model) == count_trainable(config, model.config, None), config
        check_grads(model, inputs)


@pytest.mark.parametrize(
    "arch, per_rank",
    [
        # h = 32; Llama / Qwen2: 4 heads over 2 kv heads (k, v 16 wide), gated MLP of 40; Mistral: 1 kv head (8 wide)
        ("gpt2", (32 + 32) * 3 + (32 + 32) + (32 + 128) + (128 + 32)),
        ("llama", (32 + 32) * 2 + (32 + 16) * 2 + (32 + 40) * 2 + (40 + 32)),
        ("llama_tied", (32 + 32) * 2 + (32 + 16) * 2 + (32 + 40) * 2 + (40 + 32)),
        ("mistral", (32 + 32) * 2 + (32 + 8) * 2 + (32 + 40) * 2 + (40 + 32)),
    ],
)
def test_all_targets_every_projection(arch, per_rank):
    config = {"lora.rank.0": 4, "lora.rank.1": 2, "lora.targets": "all"}
    model = apply_peft(build_causal(arch), config)
    assert (
        count_trainable(config, model.config, None)
        == measured_trainable(model)
        == per_rank * (4 + 2)
    )
    check_grads(model, batch())


def test_all_stands_alone():
    with pytest.raises(InvalidConfig) as err:
        apply_peft(build_causal("llama"), {"lora.rank": 2, "lora.targets": "all,q"})
    assert err.value.field == "lora.targets"


LORA = {"lora.rank.0": 4, "lora.rank.1": 2, "lora.targets": "all", "lora.alpha_ratio": 2.0}
IA3 = {"ia3.targets": "k,v,ffn_out", "layers.0": False}
PREFIX = {"prefix.length": 3}
PREFIX_REPARAM = {"prefix.length": 2, "prefix.reparam": 8}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "llama_tied", "qwen2", "mistral"])
@pytest.mark.parametrize(
    "config", [LORA, IA3, PREFIX, PREFIX_REPARAM], ids=["lora", "ia3", "prefix", "prefix-reparam"]
)
def test_causal_lm_exports_load_with_peft(tmp_path, arch, config):
    import json

    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    build_causal(arch).save_pretrained(tmp_path / "base")
    base = lambda: AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()  # noqa: E731
    model = apply_peft(base(), config)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    export_adapter(model, config, tmp_path / "adapter")
    peft_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert peft_config["task_type"] == "CAUSAL_LM" and peft_config["modules_to_save"] is None
    assert (
        json.loads((tmp_path / "adapter" / "autopeft_config.json").read_text())["task"]
        == "causal_lm"
    )
    inputs = batch()
    auto = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter")).eval()
    plain = PeftModel.from_pretrained(base(), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        expected = model(**inputs).logits
        assert (auto(**inputs).logits - expected).abs().max() < 1e-5
        assert (plain(**inputs).logits - expected).abs().max() < 1e-5
        assert (base()(**inputs).logits - expected).abs().max() > 1e-3  # the adapter matters


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prefixed_causal_lm_generates_what_peft_predicts(tmp_path, arch):
    """The text follows the prefix in cached generation too (positions from the cache): greedy
    decoding of the trained model agrees token for token with greedy decoding by whole-sequence
    forwards of peft's loaded export, and the prefix changes what is generated. (peft 0.21's own
    ``generate`` drops the prefix on Llama with transformers 5.25: it passes the prefix as the
    deprecated ``past_key_values`` beside the ``cache`` that generate makes, and the model keeps
    the latter; its forward, compared here, is right. peft 0.22's ``generate`` is compared too.)"""
    import peft
    from packaging.version import Version
    from peft import PeftModel

    model = apply_peft(build_causal(arch), PREFIX)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(2.0 * torch.randn(p.shape, generator=g))
    export_adapter(model, PREFIX, tmp_path)
    loaded = PeftModel.from_pretrained(build_causal(arch), str(tmp_path)).eval()
    prompt = batch(pad=False)["input_ids"][:1]
    settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        ours = model.generate(input_ids=prompt, **settings)
        plain = build_causal(arch).generate(input_ids=prompt, **settings)
        theirs = prompt
        for _ in range(settings["max_new_tokens"]):
            step = loaded(input_ids=theirs).logits[:, -1].argmax(-1, keepdim=True)
            theirs = torch.cat([theirs, step], dim=1)
        generated = loaded.generate(input_ids=prompt, **settings)
    assert ours.tolist() == theirs.tolist()
    assert ours.tolist() != plain.tolist()
    if Version(peft.__version__) >= Version("0.22"):
        assert generated.tolist() == ours.tolist()


@pytest.mark.parametrize(
    "config", [{"prefix.length.0": 2, "prefix.length.1": 3}, {"prefix.length.0": 2}]
)
def test_prefix_of_unequal_lengths_is_not_written_in_peft_format(tmp_path, config):
    """peft has one prefix length for every layer: per-layer lengths stay in autopeft's format."""
    import json

    export_adapter(apply_peft(build_causal("llama"), config), config, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    assert json.loads((tmp_path / "autopeft_config.json").read_text())["peft_format"] is False


def test_prefix_and_text_beyond_gpt2_positions_is_refused_naming_the_key():
    """GPT-2's learned positions end at n_positions: a prefix that pushes the text past them is
    an InvalidConfig naming prefix.length, not an index error."""
    model = build_causal("gpt2")
    model.config.n_positions = 8
    apply_peft(model, {"prefix.length": 2})
    model(**batch(length=6))  # positions 2..7 fit
    with pytest.raises(InvalidConfig) as err:
        model(**batch(length=7))
    assert err.value.field == "prefix.length" and "n_positions" in str(err.value)


def test_prefixed_causal_lm_continues_a_cache_after_the_prefix():
    """A forward on a filled cache, without position ids, gives the next token the position after
    the cached text (and the prefix): the same logits as the whole sequence at once."""
    import inspect

    from transformers import DynamicCache

    model = apply_peft(build_causal("llama"), PREFIX)
    takes = inspect.signature(type(model).forward).parameters
    kwarg = "cache" if "cache" in takes else "past_key_values"  # renamed in transformers 5.25
    ids = batch(pad=False)["input_ids"][:1]
    with torch.no_grad():
        whole = model(input_ids=ids).logits[:, -1]
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :-1], use_cache=True, **{kwarg: cache})
        step = model(input_ids=ids[:, -1:], use_cache=True, **{kwarg: cache}).logits[:, -1]
    assert (whole - step).abs().max() < 1e-5
