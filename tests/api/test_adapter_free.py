"""Adapter-free configs (the head alone) are kept out of a study's asks while its linear probe
holds that point; a study without the probe (a causal LM's among them) keeps them as its cheapest
candidates."""

from __future__ import annotations

from autopeft.api.schemas import StudyCreate
from autopeft.api.services.spec import validate_spec
from autopeft.api.study import adapter_free_exclusion, build_optimizer, build_space
from autopeft.cli.demo import study_spec


def _zero_and_one(space) -> tuple[dict, dict]:
    """The space's all-zero rank pattern, and the same with LoRA in the first layer."""
    zero = space.default_config()
    zero.update({p.name: 0 for p in space.params if p.name.startswith("lora.rank.")})
    one = {**zero, "lora.rank.0": 2}
    return space.validate(zero), space.validate(one)


def _spec(**fields) -> dict:
    return validate_spec(
        StudyCreate(**{**study_spec(10, 40, 1500), **fields}).model_dump(mode="json")
    )


def test_a_study_with_the_probe_never_asks_the_head_alone():
    spec = _spec()  # the demo's study: the probe and LoRA r8 beside the default optimiser
    assert "linear_probe" in [b if isinstance(b, str) else b["name"] for b in spec["baselines"]]
    space = build_space(spec)
    zero, one = _zero_and_one(space)
    opt = build_optimizer(spec, space)
    assert not opt.config_is_feasible(zero)
    assert opt.config_is_feasible(one)
    # the optimiser's own Sobol design, asked from the start, never holds it either
    assert not any(
        all(v == 0 for k, v in s.config.items() if k.startswith("lora.rank.")) for s in opt.ask(5)
    )


def test_without_the_probe_the_head_alone_stays_a_candidate():
    spec = _spec(baselines=["lora_r8"])
    assert adapter_free_exclusion(spec) is None
    space = build_space(spec)
    zero, _ = _zero_and_one(space)
    assert build_optimizer(spec, space).config_is_feasible(zero)


def test_a_causal_lm_keeps_its_base_model_point(tiny_gpt2):
    """No probe on a causal LM: the config that trains nothing is the base model, evaluated
    once, the front's cheapest point; it stays askable."""
    spec = {
        "space": "lora_decoder",
        "baselines": [],
        "workload": {"kind": "peft", "task": "causal_lm", "model": str(tiny_gpt2)},
    }
    assert adapter_free_exclusion(spec) is None


def test_a_user_cannot_set_the_exclusion_in_json():
    """``exclude`` is the service's predicate; a JSON value for it cannot act, so the study is
    refused naming the field."""
    import pytest

    from autopeft import InvalidConfig

    with pytest.raises(InvalidConfig) as err:
        _spec(optimizer={"name": "mobo", "options": {"exclude": True}})
    assert err.value.field == "optimizer.options.exclude"
