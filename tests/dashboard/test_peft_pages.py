"""The study page of a real peft study (a tiny random BERT): the hand-picked baselines as
labelled diamonds, the front's held-out test values beside the validation front, the test
hypervolume, and the trials table's baseline, test and compute columns."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import OBJ2
from tests.dashboard.test_pages import PARETO, plot_traces


@pytest.fixture(scope="module")
def peft_study(dash_server, tiny_model, small_csv, tmp_path_factory):
    api = dash_server.api
    spec = {"name": "peft with baselines", "space": "lora_per_layer", "objectives": OBJ2, "baselines": "default",
            "workload": {"kind": "peft", "model": str(tiny_model), "dataset": str(small_csv), "validation_fraction": 0.2,
                         "max_length": 32, "epochs": 1, "evals_per_epoch": 2, "pooling": "mean",
                         "cache_dir": str(tmp_path_factory.mktemp("cache"))},
            "max_trials": 6, "max_parallel": 2, "seed": 0}
    s = api.wait_done(api.create(spec)["id"], timeout=600)
    assert s["state"] == "finished" and s["counts"]["failed"] == 0, s
    return s


def test_baselines_and_test_split_on_the_study_page(page, peft_study, dash_server):
    api, sid = dash_server.api, peft_study["id"]
    trials = api.get(f"/studies/{sid}/trials")["trials"]
    baselines = {t["id"]: t for t in trials if t["kind"] == "baseline"}
    tested = [t for t in api.get(f"/studies/{sid}/pareto?split=test")["trials"] if t["values"]]
    assert len(baselines) == 2 and tested
    p = page.goto(f"#/studies/{sid}")
    p.wait_for_function(f"() => {{ const gd = {PARETO}; return gd && gd.data && gd.data.some(t => t.name === 'baselines') "
                        f"&& gd.data.some(t => t.name === 'front on test split'); }}")
    traces = {t["name"]: t for t in plot_traces(p, PARETO)}
    assert sorted(traces["baselines"]["ids"]) == sorted(baselines)
    labels = p.evaluate(f"() => {PARETO}.data.find(t => t.name === 'baselines').texttemplate")
    assert sorted(labels) == ["linear_probe", "lora_r8"]
    on_test = traces["front on test split"]
    assert sorted(on_test["ids"]) == sorted(t["id"] for t in tested)
    by_id = {t["id"]: t for t in tested}
    for tid, x, y in zip(on_test["ids"], on_test["x"], on_test["y"]):
        assert (x, y) == (by_id[tid]["values"]["accuracy"], by_id[tid]["values"]["trainable_params"])
    hv_test = api.get(f"/studies/{sid}/hypervolume?split=test")["hypervolume"]
    shown = float(p.locator("#hv-test-value").inner_text().replace(",", ""))
    assert shown == pytest.approx(hv_test, rel=1e-3)
    assert "held-out test split" in p.locator("#pareto-note").inner_text()
    # the table: a baseline column, test accuracy for the tested trials, compute per trial
    head = p.locator("#trials-table thead").inner_text()
    assert "Baseline" in head and "accuracy (test)" in head and "Epochs" in head
    probe = next(t for t in baselines.values() if t["label"] == "linear_probe")
    row = p.locator(f"#trials-table tr[data-trial-id='{probe['id']}']")
    assert "linear_probe" in row.inner_text() and f"{probe['test_values']['test_accuracy']:.4g}" in row.inner_text()
    assert "epochs" in p.locator("dd[data-fact='compute']").inner_text()
    page.screenshot("study-peft", full_page=True)


def test_the_form_creates_a_causal_lm_study(page, dash_server, tiny_llama, sft_jsonl):
    """The create form's Task select: causal_lm reaches the workload, and "all hand-picked points"
    leaves out the linear probe (a causal LM has no head to probe)."""
    p = page.goto("#/new")
    p.locator("#create-form").wait_for()
    p.get_by_label("Name", exact=True).fill("sft from the form")
    p.get_by_label("Search space").select_option("lora_decoder")
    p.get_by_label("Baselines").select_option("all")
    p.get_by_label("Max trials").fill("7")
    p.get_by_label("Model").fill(str(tiny_llama))
    p.get_by_label("Dataset", exact=True).select_option("path")
    p.get_by_label("Server path").fill(str(sft_jsonl))
    p.get_by_label("Task").select_option("causal_lm")
    p.get_by_label("More workload keys (JSON)").fill('{"max_train": 32, "max_length": 32, "epochs": 1}')
    p.get_by_role("button", name="Create study").click()
    p.wait_for_url("**/#/studies/*")
    study_id = int(p.url.rsplit("/", 1)[1])
    dash_server.api.http.post(f"/studies/{study_id}/stop")
    spec = dash_server.api.get(f"/studies/{study_id}")["spec"]
    assert spec["workload"]["task"] == "causal_lm" and spec["space"] == "lora_decoder"
    assert spec["baselines"] == ["lora_r4", "lora_r8", "lora_r16", "mam", "full_finetune"]
