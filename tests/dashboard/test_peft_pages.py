"""The study page of a real peft study (a tiny random BERT): the hand-picked baselines (a user's
own among them) as labelled diamonds, the front's held-out test values beside the validation front, the test
hypervolume, and the trials table's baseline, test and compute columns."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import OBJ2
from tests.dashboard.test_pages import PARETO, plot_traces


@pytest.fixture(scope="module")
def peft_study(dash_server, tiny_model, small_csv, tmp_path_factory):
    api = dash_server.api
    spec = {
        "name": "peft with baselines",
        "space": "lora_per_layer",
        "objectives": OBJ2,
        "baselines": [
            "linear_probe",
            "lora_r8",
            {"name": "my-lora", "config": {"lora.rank": 2, "lora.targets": "q,k,v,o", "lr": 3e-3}},
        ],
        "workload": {
            "kind": "peft",
            "model": str(tiny_model),
            "dataset": str(small_csv),
            "validation_fraction": 0.2,
            "max_length": 32,
            "epochs": 1,
            "evals_per_epoch": 2,
            "pooling": "mean",
        },
        "max_trials": 7,
        "max_parallel": 2,
        "seed": 0,
    }
    s = api.wait_done(api.create(spec)["id"], timeout=600)
    assert s["state"] == "finished" and s["counts"]["failed"] == 0, s
    return s


def test_baselines_and_test_split_on_the_study_page(page, peft_study, dash_server):
    api, sid = dash_server.api, peft_study["id"]
    trials = api.get(f"/studies/{sid}/trials")["trials"]
    baselines = {t["id"]: t for t in trials if t["kind"] == "baseline"}
    tested = [t for t in api.get(f"/studies/{sid}/pareto?split=test")["trials"] if t["values"]]
    assert len(baselines) == 3 and tested
    p = page.goto(f"#/studies/{sid}")
    p.wait_for_function(
        f"() => {{ const gd = {PARETO}; return gd && gd.data && gd.data.some(t => t.name === 'baselines') "
        f"&& gd.data.some(t => t.name === 'front on test split'); }}"
    )
    traces = {t["name"]: t for t in plot_traces(p, PARETO)}
    assert sorted(traces["baselines"]["ids"]) == sorted(baselines)
    labels = p.evaluate(f"() => {PARETO}.data.find(t => t.name === 'baselines').texttemplate")
    assert sorted(labels) == ["linear_probe", "lora_r8", "my-lora"]
    facts = p.locator("dd[data-fact='baselines']").inner_text()
    assert facts == "linear_probe, lora_r8, my-lora (yours)", facts
    on_test = traces["front on test split"]
    assert sorted(on_test["ids"]) == sorted(t["id"] for t in tested)
    by_id = {t["id"]: t for t in tested}
    for tid, x, y in zip(on_test["ids"], on_test["x"], on_test["y"]):
        assert (x, y) == (
            by_id[tid]["values"]["accuracy"],
            by_id[tid]["values"]["trainable_params"],
        )
    # each point's 95% accuracy interval on its split is drawn as an error bar along x
    bars = p.evaluate(
        f"() => Object.fromEntries({PARETO}.data.filter(t => t.error_x).map(t => "
        "[t.name, {ids: t.customdata, plus: t.error_x.array, minus: t.error_x.arrayminus, "
        "y: !!t.error_y}]))"
    )
    front = {t["id"]: t for t in api.get(f"/studies/{sid}/pareto")["trials"]}
    assert "front on test split" in bars and "baselines" in bars, bars
    for name, shown in bars.items():
        assert not shown["y"], name  # trainable_params is exact: no bar
        for tid, plus, minus in zip(shown["ids"], shown["plus"], shown["minus"]):
            t = by_id[tid] if name == "front on test split" else front.get(tid)
            if t is None:  # a baseline off the front has no interval
                assert plus == minus == 0
                continue
            iv, acc = t["intervals"]["accuracy"], t["values"]["accuracy"]
            assert (acc - minus, acc + plus) == pytest.approx((iv["low"], iv["high"]))
            assert plus >= 0 and minus >= 0 and plus + minus > 0  # at 1.0 it only goes down
    hv_test = api.get(f"/studies/{sid}/hypervolume?split=test")["hypervolume"]
    shown = float(p.locator("#hv-test-value").inner_text().replace(",", ""))
    assert shown == pytest.approx(hv_test, rel=1e-3)
    assert "held-out test split" in p.locator("#pareto-note").inner_text()
    # the table: an origin column (the baseline's name, enqueued, attached), test accuracy for the
    # tested trials, compute per trial
    head = p.locator("#trials-table thead").inner_text()
    assert "Origin" in head and "accuracy (test)" in head and "Epochs" in head
    probe = next(t for t in baselines.values() if t["label"] == "linear_probe")
    row = p.locator(f"#trials-table tr[data-trial-id='{probe['id']}']")
    assert (
        "linear_probe" in row.inner_text()
        and f"{probe['test_values']['test_accuracy']:.4g}" in row.inner_text()
    )
    assert "epochs" in p.locator("dd[data-fact='compute']").inner_text()
    page.screenshot("study-peft", full_page=True)


def _my_datasets(p) -> list[str]:
    return p.locator("#f-dataset optgroup[label='Your datasets'] option").evaluate_all(
        "os => os.map((o) => o.value)"
    )


def test_the_form_creates_a_causal_lm_study(page, dash_server, tiny_llama, sft_jsonl, tmp_path):
    """The create form's Task select: causal_lm reaches the workload, and "all hand-picked points"
    leaves out the linear probe (a causal LM has no head to probe). An SFT upload made in the form
    turns the task to causal_lm and is picked; the picker offers the SFT uploads for causal_lm and
    only the classification ones for classification."""
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(8)))
    with open(labelled, "rb") as fh:
        r = dash_server.api.http.post("/datasets", files={"file": ("labelled.csv", fh)})
    assert r.status_code == 201, r.text
    p = page.goto("#/new")
    p.locator("#create-form").wait_for()
    p.get_by_label("Name", exact=True).fill("sft from the form")
    p.get_by_label("Search space").select_option("lora_decoder")
    p.get_by_label("Baselines").select_option("all")
    p.get_by_label("Max trials").fill("7")
    p.get_by_label("Model").fill(str(tiny_llama))
    p.get_by_label("Upload a dataset").set_input_files(str(sft_jsonl))
    p.locator("#f-upload-status").filter(has_text="240 SFT records").wait_for()
    kinds = {d["id"]: d["kind"] for d in dash_server.api.get("/datasets")["datasets"]}
    sft_id = max(i for i, k in kinds.items() if k == "sft")
    assert p.get_by_label("Task").input_value() == "causal_lm"
    assert p.get_by_label("Dataset", exact=True).input_value() == f"id:{sft_id}"
    assert _my_datasets(p) == [f"id:{i}" for i, k in sorted(kinds.items()) if k == "sft"]
    page.screenshot("create-sft-upload", full_page=True)
    p.get_by_label("Task").select_option("classification")
    assert _my_datasets(p) == [f"id:{i}" for i, k in sorted(kinds.items()) if k != "sft"]
    p.get_by_label("Task").select_option("causal_lm")
    p.get_by_label("Dataset", exact=True).select_option(f"id:{sft_id}")
    p.get_by_label("More workload keys (JSON)").fill(
        '{"max_train": 32, "max_length": 32, "epochs": 1}'
    )
    p.get_by_role("button", name="Create study").click()
    p.wait_for_url("**/#/studies/*", timeout=60_000)  # a busy machine validates slowly
    study_id = int(p.url.rsplit("/", 1)[1])
    dash_server.api.http.post(f"/studies/{study_id}/stop")
    spec = dash_server.api.get(f"/studies/{study_id}")["spec"]
    assert spec["workload"]["task"] == "causal_lm" and spec["space"] == "lora_decoder"
    assert spec["workload"]["dataset_id"] == sft_id
    assert spec["baselines"] == ["lora_r4", "lora_r8", "lora_r16", "mam", "full_finetune"]


OBJ_MEMORY = OBJ2 + [{"name": "predicted_memory_mb", "direction": "minimize"}]


def test_three_objective_memory_study_shows_its_3d_front(
    page, dash_server, tiny_model, small_csv, tmp_path_factory
):
    """accuracy, trainable parameters and predicted peak memory: created over REST, run by the real
    peft trainer, each trial's predicted memory the memory model's number, and the study page draws
    the 3-objective front in 3-D (when the browser has WebGL) with predicted_memory_mb on an axis."""
    from autopeft.models import load_model_config
    from autopeft.peft.memory import predicted_memory_mb

    api = dash_server.api
    workload = {
        "kind": "peft",
        "model": str(tiny_model),
        "dataset": str(small_csv),
        "validation_fraction": 0.2,
        "labels": ["neg", "neutral", "pos"],
        "max_length": 32,
        "epochs": 1,
        "evals_per_epoch": 1,
        "pooling": "mean",
    }
    spec = {
        "name": "memory front",
        "space": "lora_per_layer",
        "objectives": OBJ_MEMORY,
        "baselines": [],
        "optimizer": {"name": "random", "options": {}},
        "workload": workload,
        "max_trials": 5,
        "max_parallel": 2,
        "seed": 3,
    }
    s = api.wait_done(api.create(spec)["id"], timeout=600)
    assert s["state"] == "finished" and s["counts"]["failed"] == 0, s
    model_config = load_model_config(tiny_model)
    trials = [
        t for t in api.get(f"/studies/{s['id']}/trials")["trials"] if t["state"] == "complete"
    ]
    for t in trials:  # the reported objective is the model's prediction, known before training
        assert t["values"]["predicted_memory_mb"] == pytest.approx(
            predicted_memory_mb(t["config"], model_config, workload, num_labels=3), rel=1e-9
        )
    assert (
        len({round(t["values"]["predicted_memory_mb"], 6) for t in trials}) > 1
    )  # it differs by config
    front = api.get(f"/studies/{s['id']}/pareto")["trials"]
    ids = sorted(t["id"] for t in front)
    p = page.goto(f"#/studies/{s['id']}")
    p.wait_for_function(
        f"() => {{ const gd = {PARETO}; return gd && gd.data && gd.data.some(t => t.name === 'Pareto front'); }}"
    )
    assert p.locator("#pareto-z").count() == 1  # a third axis to choose
    if p.evaluate("() => !document.getElementById('mode-3d').disabled"):
        p.get_by_label("3-D scatter").check()
        p.wait_for_function(f"() => {PARETO}.data.some(t => t.type === 'scatter3d')")
        traces = {t["name"]: t for t in plot_traces(p, PARETO)}
        assert sorted(traces["Pareto front"]["ids"]) == ids
        by_id = {t["id"]: t for t in front}
        zs = {i: z for i, z in zip(traces["Pareto front"]["ids"], traces["Pareto front"]["z"])}
        assert any(z == by_id[i]["values"]["predicted_memory_mb"] for i, z in zs.items())
        page.screenshot("study-memory-3d")
    else:
        pytest.fail("this Chromium has no WebGL: the 3-D front cannot be shown")
