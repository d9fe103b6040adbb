"""The peft path (issue 35): every method peft injects, its exact count, the routing rules, the
two paths agreeing on today's LoRA configs, AdaLoRA's rank allocation, and peft-format export."""

from __future__ import annotations

import copy

import pytest
import torch

from autopeft import InvalidConfig
from autopeft.peft import apply_peft, count_trainable, export_adapter, load_adapter
from autopeft.peft.peftlib import TrainingHooks, engine_of
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

# targets every family has as whole modules (GPT-2 fuses q, k, v in c_attn)
WHOLE = "o,ffn_in"
METHODS = {
    "dora": {"lora.rank": 4, "lora.variant": "dora", "lora.targets": WHOLE},
    "rslora": {"lora.rank.0": 4, "lora.rank.1": 2, "lora.variant": "rslora", "lora.targets": WHOLE},
    "pissa": {"lora.rank": 2, "lora.init": "pissa", "lora.targets": WHOLE},
    "olora": {"lora.rank": 2, "lora.init": "olora", "lora.targets": "o"},
    "gaussian": {"lora.rank": 2, "lora.init": "gaussian", "lora.targets": "ffn_out"},
    "dora_pissa": {
        "lora.rank": 2,
        "lora.variant": "dora",
        "lora.init": "pissa",
        "lora.targets": "o",
    },
    "vera": {"vera.rank": 4, "vera.targets": WHOLE, "layers.1": False},
    "loha": {"loha.rank.0": 4, "loha.rank.1": 2, "loha.targets": WHOLE},
    "lokr": {"lokr.rank": 4, "lokr.targets": WHOLE},
    "lokr_both": {
        "lokr.rank": 1,
        "lokr.targets": "o,ffn_out",
        "lokr.decompose_both": True,
        "lokr.factor": 4,
    },
    "adalora": {"adalora.rank": 6, "adalora.target_rank": 4, "adalora.targets": WHOLE},
}
# peft's LoHa / LoKr do not take GPT-2's Conv1D, its OLoRA init mishandles Conv1D's transposed weight
CONV1D_REFUSED = {
    "loha": "loha.targets",
    "lokr": "lokr.targets",
    "lokr_both": "lokr.targets",
    "olora": "lora.init",
}
# the LoRA family keeps a fresh model's outputs (B = 0, or W = residual + B A for PiSSA / OLoRA)
IDENTITY = ("dora", "rslora", "pissa", "olora", "gaussian", "dora_pissa")


def _cases():
    for arch in ARCHS:
        for name in METHODS:
            yield pytest.param(arch, name, id=f"{arch}-{name}")


@pytest.mark.parametrize("num_labels", [3, None], ids=["head", "bare"])
@pytest.mark.parametrize("arch,name", list(_cases()))
def test_peft_method_trains_with_the_predicted_count(arch, name, num_labels):
    config = METHODS[name]
    model = build(arch, num_labels)
    if arch == "gpt2" and name in CONV1D_REFUSED:
        field = CONV1D_REFUSED[name]
        with pytest.raises(InvalidConfig) as err:
            count_trainable(config, model.config, num_labels)
        assert err.value.field == field
        with pytest.raises(InvalidConfig) as err:
            apply_peft(model, config)
        assert err.value.field == field
        return
    pristine = copy.deepcopy(model)
    inputs = batch()
    apply_peft(model, config)
    assert engine_of(model) == "peft"
    assert measured_trainable(model) == count_trainable(config, model.config, num_labels)
    check_grads(model, inputs)  # exactly the trainable parameters get a gradient (nonzero: below)
    if name in IDENTITY:
        with torch.no_grad():
            before, after = output(pristine, inputs), output(model, inputs)
        assert torch.allclose(before, after, atol=1e-4, rtol=1e-4), (before - after).abs().max()


@pytest.mark.parametrize("arch", ARCHS)
def test_every_method_gets_a_gradient_after_a_step(arch):
    """After one optimiser step every trainable tensor of every method has a nonzero gradient."""
    for name, config in METHODS.items():
        if arch == "gpt2" and name in CONV1D_REFUSED:
            continue
        torch.manual_seed(0)
        model = build(arch)
        apply_peft(model, config)
        dead = dead_after_steps(model)
        assert not dead, (name, dead[:4])


# today's LoRA configs (every family, targets that are whole modules on each)
LORA_TODAY = {
    "bert": {"lora.rank.0": 4, "lora.rank.2": 2, "lora.targets": "q,v", "lora.dropout": 0.0},
    "roberta": {"lora.rank": 3, "lora.targets": "all", "lora.alpha": 6.0},
    "distilbert": {"lora.rank": 2, "lora.targets": "q,k,v,o,ffn_in,ffn_out"},
    "gpt2": {"lora.rank": 4, "lora.targets": "o,ffn_in,ffn_out"},
    "llama": {"lora.rank.1": 4, "lora.targets": "all"},
    "mistral": {"lora.rank": 2, "lora.targets": "q,k,v"},
}


def _curve(arch, config, engine, steps=20):
    model = build(arch).train()
    torch.manual_seed(7)
    apply_peft(model, config, engine)
    # peft draws (then overwrites) IA3's initial values: dropout masks start from the same state
    # again, as a trial re-seeds at each epoch's start
    torch.manual_seed(8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    curve = []
    for step in range(steps):
        opt.zero_grad()
        loss = ((output(model, batch(seed=step)).float() - 1) ** 2).mean()
        loss.backward()
        opt.step()
        curve.append(float(loss))
    return measured_trainable(model), engine_of(model), curve


@pytest.mark.parametrize("arch", ["bert", "distilbert", "llama"])
def test_both_paths_give_the_same_ia3(arch):
    """IA3 (k, v and the FFN's input) from peft and from the modules written here: the same count
    and the same loss curve, exactly."""
    config = {"ia3.targets": "k,v,ffn_out", "layers.0": False}
    own, peft = _curve(arch, config, "own"), _curve(arch, config, "auto")
    assert own[1] is None and peft[1] == "peft"
    assert own[0] == peft[0] == count_trainable(config, tiny_configs()[arch], 3)
    assert own[2] == peft[2] and own[2][-1] < own[2][0]


@pytest.mark.parametrize("arch", list(LORA_TODAY))
def test_both_paths_give_the_same_lora(arch):
    """The same LoRA config injected by peft and by the modules written here: the same count,
    the same initial weights (the same random draws in the same order) and, over 20 AdamW steps
    from the same seed, the same loss curve (tolerance: max relative difference <= 1e-5; it is 0
    here, both compute ``W x + b + s B A x`` in the same order)."""
    config = LORA_TODAY[arch]
    curves, counts = {}, {}
    for engine in ("own", "peft"):
        model = build(arch).train()
        torch.manual_seed(7)
        apply_peft(model, config, engine)
        assert engine_of(model) == (engine if engine == "peft" else None)
        counts[engine] = measured_trainable(model)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        curve = []
        for step in range(20):
            opt.zero_grad()
            loss = ((output(model, batch(seed=step)).float() - 1) ** 2).mean()
            loss.backward()
            opt.step()
            curve.append(float(loss))
        curves[engine] = torch.tensor(curve)
    assert counts["own"] == counts["peft"] == count_trainable(config, tiny_configs()[arch], 3)
    rel = ((curves["own"] - curves["peft"]).abs() / curves["own"].abs()).max()
    assert rel <= 1e-5, (rel, curves)
    assert curves["own"][-1] < curves["own"][0]  # it trained


def test_auto_routes_plain_lora_to_peft_and_slices_to_own():
    model = build("bert")
    apply_peft(model, {"lora.rank": 2})
    assert engine_of(model) == "peft"
    model = build("gpt2")
    apply_peft(model, {"lora.rank": 2, "lora.targets": "q,v"})  # slices of c_attn
    assert engine_of(model) is None
    model = build("bert")
    apply_peft(model, {"lora.rank": 2, "serial.size": 4})  # a mix: the modules written here
    assert engine_of(model) is None


@pytest.mark.parametrize(
    "arch,config,engine,field",
    [
        (
            "bert",
            {"lora.rank": 2, "lora.variant": "dora", "serial.size": 4},
            "auto",
            "lora.variant",
        ),
        ("bert", {"vera.rank": 2, "ia3.targets": "v"}, "auto", "vera.rank"),
        ("bert", {"loha.rank": 2, "lokr.rank": 2}, "auto", "loha.rank"),
        (
            "gpt2",
            {"lora.rank": 2, "lora.init": "pissa", "lora.targets": "q,v"},
            "auto",
            "lora.targets",
        ),
        ("gpt2", {"vera.rank": 2, "vera.targets": "q"}, "auto", "vera.targets"),
        ("bert", {"lora.rank": 2, "lora.variant": "dora"}, "own", "peft_engine"),
        ("bert", {"lora.rank": 2, "prefix.length": 2}, "peft", "peft_engine"),
        ("bert", {"adalora.rank": 4, "adalora.target_rank": 8}, "auto", "adalora.target_rank"),
        ("bert", {"lora.rank": 2}, "fast", "peft_engine"),
        ("bert", {"lora.rank": 2, "lora.variant": "qlora"}, "auto", "lora.variant"),
        ("bert", {"lora.rank": 2, "lora.plus_ratio": 0.5}, "auto", "lora.plus_ratio"),
        ("bert", {"lokr.rank": 2, "lokr.factor": 0}, "auto", "lokr.factor"),
    ],
)
def test_configs_peft_cannot_take_are_refused_before_training(arch, config, engine, field):
    model = build(arch)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidConfig) as err:
        apply_peft(model, config, engine)
    assert err.value.field == field
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    if engine == "auto" and field != "lora.targets" and "engine" not in field:
        with pytest.raises(InvalidConfig) as err:  # the cost model refuses the same key
            count_trainable(config, tiny_configs()[arch], 3)
        assert err.value.field == field


def test_adalora_prunes_to_its_target_budget():
    """AdaLoRA through the training hooks: after the schedule, the kept singular values (nonzero
    ``lora_E`` entries) add up to ``target_rank`` per adapted projection, spread unevenly."""
    torch.manual_seed(0)
    model = build("bert").train()
    config = {"adalora.rank": 6, "adalora.target_rank": 2, "adalora.targets": "q,v,ffn_in"}
    apply_peft(model, config)
    hooks = TrainingHooks(model)
    assert hooks.active
    steps = 30
    hooks.begin(steps)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        opt.zero_grad()
        loss = (output(model, batch(seed=step)).float() ** 2).mean() + hooks.extra_loss()
        loss.backward()
        opt.step()
        hooks.after_step(step)
    kept = {
        n: int((p != 0).sum()) for n, p in model.named_parameters() if n.endswith("lora_E.default")
    }
    assert len(kept) == 3 * 3
    assert sum(kept.values()) == 2 * len(kept)
    assert max(kept.values()) <= 6


PEFT_EXPORT = ["dora", "rslora", "pissa", "olora", "vera", "loha", "lokr", "adalora"]


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("name", PEFT_EXPORT)
def test_peft_loads_the_export_of_every_method(tmp_path, arch, name):
    """After some training (AdaLoRA pruned), ``PeftModel.from_pretrained`` on a pristine base gives
    the trained model's outputs, and ``load_adapter`` does too."""
    from peft import PeftModel

    config = METHODS[name]
    torch.manual_seed(1)
    model = build(arch).train()
    apply_peft(model, config)
    hooks = TrainingHooks(model)
    hooks.begin(12)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for step in range(12):
        opt.zero_grad()
        loss = (output(model, batch(seed=step)).float() ** 2).mean() + hooks.extra_loss()
        loss.backward()
        opt.step()
        hooks.after_step(step)
    model.eval()
    inputs = batch(seed=99)
    with torch.no_grad():
        want = output(model, inputs)
    export_adapter(model, config, tmp_path)
    assert (tmp_path / "adapter_config.json").is_file()
    loaded = PeftModel.from_pretrained(build(arch), str(tmp_path)).eval()
    with torch.no_grad():
        got = output(loaded, inputs)
    assert torch.allclose(want, got, atol=1e-4, rtol=1e-4), (want - got).abs().max()
    own = load_adapter(build(arch), tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(want, output(own, inputs), atol=1e-5, rtol=1e-5)


def test_dora_on_a_pissa_residual_exports_the_own_format_only(tmp_path):
    model = build("bert")
    config = METHODS["dora_pissa"]
    apply_peft(model, config)
    export_adapter(model, config, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    inputs = batch()
    with torch.no_grad():
        assert torch.allclose(
            output(model.eval(), inputs), output(load_adapter(build("bert"), tmp_path), inputs)
        )


def test_adapters_exported_by_the_own_path_still_load(tmp_path):
    """An adapter exported before peft injected plain LoRA (engine "own") loads the same way."""
    config = {"lora.rank": 2, "lora.targets": "q,v"}
    model = build("bert")
    apply_peft(model, config, "own")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    export_adapter(model, config, tmp_path)
    loaded = load_adapter(build("bert"), tmp_path)
    assert engine_of(loaded) is None
    inputs = batch()
    with torch.no_grad():
        assert torch.allclose(output(model, inputs), output(loaded, inputs), atol=1e-6)
