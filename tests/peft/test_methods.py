"""Every method on every tiny architecture: forward + backward, exactly the PEFT parameters and
the head train, the cost model equals the measured count, identity at init, prefix semantics."""

from __future__ import annotations

import copy

import pytest
import torch

from autopeft.peft import apply_peft, count_trainable
from tests.peft.conftest import (
    ARCHS,
    batch,
    build,
    check_grads,
    measured_trainable,
    output,
    tiny_configs,
)

GATED = ("llama", "qwen2", "mistral")

# name -> (config, outputs unchanged at init)
CONFIGS = {
    "lora_qv": ({"lora.rank": 4}, True),
    "lora_all_per_layer": (
        {
            "lora.rank.0": 2,
            "lora.rank.1": 0,
            "lora.targets": "q,k,v,o,ffn_in,ffn_out",
            "lora.alpha": 8.0,
            "lora.dropout": 0.1,
        },
        True,
    ),
    "lora_kv_mask": ({"lora.rank": 3, "lora.targets": "k,v", "layers.1": False}, True),
    "serial": ({"serial.size": 4, "serial.activation": "gelu"}, True),
    "parallel": ({"parallel.size.0": 3, "parallel.size.1": 5, "parallel.scaling": 2.0}, True),
    "ia3": ({"ia3.targets": "k,v,ffn_out"}, True),
    "ia3_masked": ({"ia3.targets": "v", "layers.0": False}, True),
    "prefix": ({"prefix.length": 3}, False),
    "prefix_reparam_per_layer": (
        {"prefix.length.0": 2, "prefix.length.1": 0, "prefix.reparam": 16},
        False,
    ),
    "all_methods": (
        {
            "lora.rank": 2,
            "lora.targets": "q,v,o,ffn_out",
            "serial.size": 5,
            "parallel.size": 3,
            "prefix.length": 2,
            "prefix.reparam": 7,
            "ia3.targets": "k,v,ffn_out",
            "layers.0": False,
            "lr": 1e-3,
            "epochs": 2,
        },
        False,
    ),
    "nothing": ({"lr": 1e-3}, True),
}
GATED_ONLY = {"lora_gate": ({"lora.rank.1": 4, "lora.targets": "ffn_gate,ffn_in"}, True)}


def _cases():
    for arch in ARCHS:
        for name in CONFIGS:
            yield pytest.param(arch, name, id=f"{arch}-{name}")
    for arch in GATED:
        yield pytest.param(arch, "lora_gate", id=f"{arch}-lora_gate")


@pytest.mark.parametrize("num_labels", [3, None], ids=["head", "bare"])
@pytest.mark.parametrize("arch,name", list(_cases()))
def test_method_on_arch(arch, name, num_labels):
    config, identity = {**CONFIGS, **GATED_ONLY}[name]
    model = build(arch, num_labels)
    pristine = copy.deepcopy(model)
    original = {id(p) for p in model.parameters()}
    head_ids = set()
    for child in ("classifier", "score", "pre_classifier"):
        if hasattr(model, child):
            head_ids |= {id(p) for p in getattr(model, child).parameters()}
    inputs = batch()

    assert apply_peft(model, config) is model
    # frozen: every original parameter except the head; trainable: every new parameter
    for n, p in model.named_parameters():
        if id(p) in original:
            assert p.requires_grad == (id(p) in head_ids), n
        else:
            assert p.requires_grad, n
    assert measured_trainable(model) == count_trainable(config, model.config, num_labels)
    check_grads(model, inputs)

    with torch.no_grad():
        before, after = output(pristine, inputs), output(model, inputs)
    if identity:
        assert torch.allclose(before, after, atol=1e-6, rtol=0), (before - after).abs().max()
    else:
        assert (before - after).abs().max() > 1e-3 * before.abs().max()


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_trains(arch):
    model = build(arch, None)
    apply_peft(model, {"prefix.length": 2})
    inputs = batch()
    check_grads(model, inputs)
    grads = [
        p.grad.abs().sum().item() for n, p in model.named_parameters() if "autopeft_prefix" in n
    ]
    assert grads and all(g > 0 for g in grads)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    target = torch.randn(output(model, inputs).shape, generator=torch.Generator().manual_seed(0))

    def loss():
        return ((output(model, inputs) - target) ** 2).mean()

    loss0 = loss().item()
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < loss0 - 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_respects_padding(arch, attn):
    """Non-pad positions of a padded batch equal the unpadded run: the padded mask lines up."""
    model = apply_peft(build(arch, None, attn=attn), {"prefix.length.0": 3, "prefix.length.1": 1})
    inputs = batch(pad=True)
    short = {k: v[1:, :5] for k, v in inputs.items()}
    with torch.no_grad():
        padded = output(model, inputs)[1, :5]
        alone = output(model, short)[0]
    assert torch.allclose(padded, alone, atol=1e-5), (padded - alone).abs().max()


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_eager_equals_sdpa(arch):
    config = {"prefix.length": 2, "prefix.reparam": 8}
    a = apply_peft(build(arch, None, attn="sdpa"), config)
    b = apply_peft(build(arch, None, attn="eager"), config)
    b.load_state_dict(a.state_dict())
    inputs = batch()
    with torch.no_grad():
        assert torch.allclose(output(a, inputs), output(b, inputs), atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "mistral"])
def test_prefix_equals_cached_context(arch):
    """A decoder prefix holding the K/V of a context == running after that context with a cache:
    every query attends to the whole prefix (not causally), keys are used as given."""
    from transformers import DynamicCache

    model = build(arch, None)
    ids = torch.randint(2, 100, (1, 9), generator=torch.Generator().manual_seed(3))
    ctx, rest = ids[:, :4], ids[:, 4:]
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(input_ids=ctx, cache=cache, use_cache=True)
        kv = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        expected = model(input_ids=rest, cache=cache, use_cache=True).last_hidden_state
    pristine_impl = model.config._attn_implementation
    apply_peft(model, {"prefix.length": 4})
    assert model.config._attn_implementation != pristine_impl
    with torch.no_grad():
        for layer, (k, v) in zip(
            [m for n, m in model.named_modules() if n.endswith("autopeft_prefix")], kv
        ):
            layer.key.copy_(k[0].transpose(0, 1).reshape(4, -1))
            layer.value.copy_(v[0].transpose(0, 1).reshape(4, -1))
        positions = torch.arange(4, 9)[None]
        got = model(input_ids=rest, position_ids=positions, use_cache=False).last_hidden_state
        got_masked = model(
            input_ids=rest,
            attention_mask=torch.ones_like(rest),
            position_ids=positions,
            use_cache=False,
        ).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert torch.allclose(got_masked, expected, atol=1e-5)


def test_gpt2_fused_lora_slices_only_touch_their_slice():
    model = apply_peft(build("gpt2"), {"lora.rank": 2, "lora.targets": "k"})
    host = model.transformer.h[0].attn.c_attn
    branch = host.lora["k"]
    assert (branch.start, branch.stop) == (32, 64)
    torch.nn.init.normal_(branch.lora_B.weight)
    x = torch.randn(1, 3, 32)
    delta = host(x) - host.base_layer(x)
    assert delta[..., :32].abs().max() == 0 and delta[..., 64:].abs().max() == 0
    assert delta[..., 32:64].abs().max() > 0


def test_apply_twice_is_refused():
    from autopeft import InvalidConfig

    model = apply_peft(build("bert"), {"lora.rank": 2})
    with pytest.raises(InvalidConfig, match="already"):
        apply_peft(model, {"lora.rank": 2})


def test_describe_config_matches_structure():
    """The config-only description agrees with the shapes found by walking each model."""
    from autopeft.peft.arch import describe_config
    from autopeft.peft.host import linear_dims
    from autopeft.peft.modelmap import map_model

    for arch, cfg in tiny_configs().items():
        model = build(arch, None)
        desc = describe_config(cfg)
        mmap = map_model(model)
        assert desc.num_layers == len(mmap.layers)
        for name, proj in mmap.layers[0].projs.items():
            module = model.get_submodule(proj.path)
            n_in, n_out = linear_dims(module)
            if proj.sliced:
                n_out = proj.stop - proj.start
            assert desc.linear_shape(name) == (n_in, n_out), (arch, name)
            assert desc.bias[name] == (getattr(module, "bias", None) is not None), (arch, name)
        assert desc.fused_qkv == any(p.sliced for p in mmap.layers[0].projs.values())
        assert desc.gated == ("ffn_gate" in mmap.layers[0].projs)


@pytest.mark.parametrize("train", [True, False])
def test_new_modules_follow_the_model_mode(train):
    model = build("gpt2").train(train)
    apply_peft(
        model,
        {
            "lora.rank": 2,
            "lora.dropout": 0.5,
            "prefix.length": 1,
            "prefix.reparam": 4,
            "parallel.size": 2,
            "serial.size": 2,
        },
    )
    assert all(m.training == train for m in model.modules())


def test_deepcopy_of_an_adapted_model():
    config = {"prefix.length": 2, "prefix.reparam": 4, "parallel.size": 3, "lora.rank": 2}
    model = apply_peft(build("llama"), config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    clone = copy.deepcopy(model)
    prefix = clone.model.layers[0].self_attn.autopeft_prefix
    assert prefix._reparam is clone.autopeft_prefix_reparam  # shared MLP stays shared, in the copy
    inputs = batch()
    with torch.no_grad():
        assert torch.equal(output(model, inputs), output(clone, inputs))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_language_model_head_stays_frozen(arch):
    from transformers import AutoModelForCausalLM

    config = {"lora.rank": 2, "serial.size": 4}
    torch.manual_seed(0)
    model = apply_peft(AutoModelForCausalLM.from_config(tiny_configs()[arch]), config)
    assert not model.get_output_embeddings().weight.requires_grad
    assert measured_trainable(model) == count_trainable(config, model.config, None)
    check_grads(model, batch())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generation_with_a_cache_matches_without(arch):
    """Decoding step by step with a KV cache sees the prefix exactly like a full recompute."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_configs()[arch]).eval()
    apply_peft(model, {"prefix.length": 3, "lora.rank": 2})
    prompt = torch.randint(2, 100, (1, 5), generator=torch.Generator().manual_seed(4))
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_bfloat16_model():
    model = build("llama").to(torch.bfloat16)
    config = {
        "lora.rank": 2,
        "serial.size": 3,
        "parallel.size": 3,
        "prefix.length": 2,
        "prefix.reparam": 4,
        "ia3.targets": "k,v,ffn_out",
    }
    apply_peft(model, config)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    check_grads(model, batch())
