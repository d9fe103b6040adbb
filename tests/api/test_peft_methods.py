"""The methods peft injects, through the service on the real peft workload (issue 35): a study of
the ``lora_variants`` space with the ``adalora`` and ``dora_r8`` baselines completes on the local
and Ray executors, every trial's trainable parameters are the cost model's, and an exported point
loads in peft with the trial's test accuracy; what a model cannot take is a 422 naming the field."""

from __future__ import annotations

import json

import pytest
import torch

from tests.api.conftest import client_for, make_token
from tests.conftest import tiny_peft_workload

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


@pytest.fixture
def peft_workload(tiny_model, small_csv):
    return tiny_peft_workload(tiny_model, small_csv, epochs=1, evals_per_epoch=1)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_lora_variants_with_adalora_and_dora_baselines(
    sqlite_url, server_factory, peft_workload, tiny_model, executor, tmp_path
):
    if executor == "ray":
        pytest.importorskip("ray")
    from transformers import AutoConfig

    from autopeft.peft import count_trainable

    env = {"AUTOPEFT_EXECUTOR": executor} if executor == "ray" else None
    server = server_factory(sqlite_url, env=env)
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec={
            "name": f"variants-{executor}",
            "space": "lora_variants",
            "objectives": OBJECTIVES,
            "workload": peft_workload,
            "optimizer": {"name": "random"},
            "baselines": ["adalora", "dora_r8", "lora_r8"],
            "max_trials": 7,
            "max_parallel": 2,
            "seed": 3,
        }
    )
    study.wait(timeout=900, poll=0.5, progress=False)
    assert study.state == "finished", study.data
    trials = study.trials()
    assert len(trials) == 7 and study.counts["complete"] == 7, trials
    model_config = AutoConfig.from_pretrained(tiny_model)
    for t in trials:  # the cost model's count is what trained (3 labels)
        assert t["values"]["trainable_params"] == count_trainable(
            t["config"],
            model_config,
            3,  # three labels
        ), t
    base = {t["label"]: t for t in trials if t["kind"] == "baseline"}
    assert set(base) == {"adalora", "dora_r8", "lora_r8"}
    # DoRA r8 = LoRA r8 plus one magnitude per output feature of q and v in every layer
    layers, hidden = model_config.num_hidden_layers, model_config.hidden_size
    dora, lora = base["dora_r8"]["values"], base["lora_r8"]["values"]
    assert dora["trainable_params"] - lora["trainable_params"] == 2 * layers * hidden
    # AdaLoRA starts at rank 12 with one singular value a rank: 12 (in + out + 1) per projection
    assert base["adalora"]["values"]["trainable_params"] - lora["trainable_params"] == (
        2 * layers * (12 * (2 * hidden + 1) - 8 * 2 * hidden)
    )
    searched = [t for t in trials if t["kind"] == "search"]
    assert len({t["config"]["lora.variant"] for t in searched}) >= 2  # seeded: variants differ

    # an exported DoRA point is in peft's own format and loads there with every tensor
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    folder = study.export(base["dora_r8"]["id"], tmp_path / "dora")
    meta = json.loads((folder / "adapter_config.json").read_text())
    assert meta["peft_type"] == "LORA" and meta["use_dora"] is True
    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert sum(k.endswith("lora_magnitude_vector") for k in saved) == 2 * layers
    base_model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    loaded = PeftModel.from_pretrained(base_model, str(folder))
    magnitudes = [n for n, _ in loaded.named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2 * layers


def test_configs_a_model_cannot_take_are_422_naming_the_field(
    sqlite_url, server_factory, tiny_gpt2, small_csv
):
    import httpx

    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    workload = tiny_peft_workload(tiny_gpt2, small_csv, epochs=1, pooling="model")
    cases = [
        ({"space": "lora_variants"}, "lora.targets"),  # DoRA / PiSSA on GPT-2's fused q, v slices
        ({"space": "lora_per_layer", "baselines": ["lora_r8", "dora_r8"]}, "baselines.1"),
        ({"space": "lora_per_layer", "baselines": ["adalora"]}, "baselines.0"),
        ({"space": "lora_per_layer", "workload": {**workload, "peft_engine": "fast"}}, None),
    ]
    for fields, field in cases:
        spec = {
            "name": "refused",
            "objectives": OBJECTIVES,
            "workload": workload,
            "max_trials": 4,
            **fields,
        }
        r = httpx.post(
            f"{server.url}/api/v1/studies",
            json=spec,
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
            timeout=120,
        )
        assert r.status_code == 422, (fields, r.text)
        err = r.json()["error"]
        assert (field or "workload.peft_engine") in err["field"], (fields, err)


def test_a_prompt_tuning_study_exports_what_peft_loads(
    sqlite_url, server_factory, peft_workload, tiny_model, tmp_path
):
    """Prompt tuning through the service: the trials train ``length x hidden`` prompt parameters
    (plus the head), and an exported point loads in peft with the trial's logits."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from autopeft.peft import count_trainable, load_adapter

    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec={
            "name": "prompt",
            "space": {
                "params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
                "peft": {"prompt": {"length": {"choices": [4, 8]}, "init": "vocab"}},
            },
            "objectives": OBJECTIVES,
            "workload": peft_workload,
            "optimizer": {"name": "random"},
            "baselines": [],
            "max_trials": 2,
            "max_parallel": 1,
            "seed": 1,
        }
    )
    study.wait(timeout=600, poll=0.5, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 2, study.data
    model_config = AutoConfig.from_pretrained(tiny_model)
    trial = study.trials()[0]
    length = trial["config"]["prompt.length"]
    params = trial["values"]["trainable_params"]
    assert params == count_trainable(trial["config"], model_config, 3)
    assert params - count_trainable({}, model_config, 3) == length * model_config.hidden_size
    folder = study.export(trial["id"], tmp_path / "prompt")
    meta = json.loads((folder / "adapter_config.json").read_text())
    assert meta["peft_type"] == "PROMPT_TUNING" and meta["num_virtual_tokens"] == length
    fresh = lambda: AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)  # noqa: E731
    pooling = json.loads((folder / "autopeft_config.json").read_text())["pooling"]
    base = fresh()
    if pooling == "mean":
        from autopeft.peft.pooling import apply_pooling

        apply_pooling(base, "mean")
    loaded = PeftModel.from_pretrained(base, str(folder)).eval()
    ours = load_adapter(fresh(), folder).eval()
    ids = torch.randint(5, 90, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = ours(input_ids=ids, attention_mask=mask).logits
        got = loaded(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(want, got, atol=1e-5), (want - got).abs().max()
