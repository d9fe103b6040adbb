"""Export that ships (issue 33 item 7), through the real server and the real peft workload: every
exported folder carries a model card (study, config, validation and held-out test metrics with
95% intervals, trainable parameters), and a LoRA point exports as a merged model folder that
plain transformers loads with the adapter's outputs; an adapter that cannot fold into the
weights is a 422 naming ``merged``."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from tests.api.conftest import client_for, make_token
from tests.conftest import tiny_peft_workload

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


def test_merged_model_and_model_card(sqlite_url, server_factory, tiny_model, small_csv, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from autopeft.api.services.front import wilson
    from autopeft.cli import main as cli
    from autopeft.peft import load_adapter
    from autopeft.peft.pooling import apply_pooling, detect_pooling

    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(
        spec={
            "name": "ships",
            "space": {"peft": {"lora": {"rank": {"choices": [2]}, "targets": "q,v,ffn_out"}}},
            "objectives": OBJECTIVES,
            "workload": tiny_peft_workload(tiny_model, small_csv, epochs=1),
            "optimizer": {"name": "random"},
            "baselines": ["mam"],
            "max_trials": 2,
            "max_parallel": 1,
            "seed": 0,
        }
    )
    study.wait(timeout=600, poll=0.5, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 2, study.data
    trials = {t["kind"]: t for t in study.trials()}
    lora, mam = trials["search"], trials["baseline"]
    assert lora["test_values"], lora  # a front point: tested on the held-out split

    # the adapter's model card: where it came from and what it scored, with intervals
    adapter = study.export(lora["id"], tmp_path / "adapter")
    card = (adapter / "README.md").read_text()
    tv = lora["test_values"]
    low, high = wilson(tv["test_accuracy"], int(tv["test_examples"]))
    assert f"study {study.id} ('ships')" in card and f"trial {lora['id']}" in card
    assert (
        f"| test (held out) | accuracy | {tv['test_accuracy']:.4f} | [{low:.3f}, {high:.3f}] |"
        in card
    )
    assert f"trainable parameters: {int(lora['values']['trainable_params']):,}" in card
    assert '"lora.rank": 2' in card and "PeftModel.from_pretrained" in card

    # the merged folder: plain transformers (plus the pooling the checkpoint was trained with)
    # gives the adapter's logits
    merged = study.export(lora["id"], tmp_path / "merged", merged=True)
    assert not (merged / "adapter_config.json").exists()
    assert json.loads((merged / "autopeft_merged.json").read_text())["peft_type"] == "LORA"
    assert "library_name: transformers" in (merged / "README.md").read_text()
    model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    assert not any("lora" in n for n, _ in model.named_parameters())
    apply_pooling(model, detect_pooling(merged))
    tokenizer = AutoTokenizer.from_pretrained(merged)
    inputs = tokenizer(
        ["a short text", "another, longer piece of text"], padding=True, return_tensors="pt"
    )
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    reference = load_adapter(base, adapter).eval()
    with torch.no_grad():
        want = reference(**inputs).logits
        got = model(**inputs).logits
    assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()
    # served from disk the second time: the same archive
    url = f"{server.url}/api/v1/trials/{lora['id']}/merged"
    headers = {"Authorization": f"Bearer {token}"}
    first = httpx.get(url, headers=headers, trust_env=False, timeout=120)
    second = httpx.get(url, headers=headers, trust_env=False, timeout=120)
    assert first.status_code == 200 and first.content == second.content

    # MAM (parallel adapter + prefix) adds modules, not weights: nothing to merge
    r = httpx.get(
        f"{server.url}/api/v1/trials/{mam['id']}/merged",
        headers=headers,
        trust_env=False,
        timeout=120,
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "merged", r.text
    # its adapter still exports (own format) with a card
    own = study.export(mam["id"], tmp_path / "mam")
    assert (own / "autopeft_config.json").is_file() and "(mam)" in (own / "README.md").read_text()

    # the CLI: --merged needs TRIAL DIR, and writes the merged folder
    env_args = ["--url", server.url, "--token", token]
    assert cli(["study", "export", str(study.id), "--merged", *env_args]) == 2
    out = tmp_path / "cli"
    assert (
        cli(["study", "export", str(study.id), str(lora["id"]), str(out), "--merged", *env_args])
        == 0
    )
    assert (out / "autopeft_merged.json").is_file() and (out / "README.md").is_file()


@pytest.mark.parametrize("merged", [False, True])
def test_export_of_a_missing_trial_is_404(sqlite_url, server_factory, merged):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    what = "merged" if merged else "adapter"
    r = httpx.get(
        f"{server.url}/api/v1/trials/999/{what}",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
        timeout=30,
    )
    assert r.status_code == 404, r.text
