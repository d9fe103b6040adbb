"""Trials of the methods peft injects (issue 35), through the real trainer: today's LoRA configs
give the same reports whichever path injects them, LoRA+ trains B faster, AdaLoRA prunes inside a
trial and resumes from a checkpoint, and every new method trains with the predicted count."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from autopeft.trials import TrialContext, run_workload
from autopeft.trials import checkpoint as ckpt
from autopeft.trials.train import PeftTrainer

TASK = ("accuracy", "loss", "train_loss")


@pytest.fixture
def workload(tiny_model, small_csv):
    # 180 rows -> 36 validation, 18 test, 126 train; batch 16 -> 8 steps an epoch; 2 reports an epoch
    return {
        "kind": "peft",
        "model": str(tiny_model),
        "dataset": str(small_csv),
        "validation_fraction": 0.2,
        "batch_size": 16,
        "max_length": 32,
        "evals_per_epoch": 2,
        "epochs": 2,
    }


def _reports(workload, config, **trial):
    seen = []
    out = run_workload(
        workload, config, TrialContext("t", reporter=lambda s, m: seen.append(m), **trial)
    )
    return out, seen


@pytest.mark.parametrize(
    "config",
    [
        {"lora.rank": 4, "lora.targets": "q,v", "lr": 3e-3, "lora.dropout": 0.1},
        {"lora.rank.0": 8, "lora.rank.1": 2, "lora.targets": "all", "lr": 2e-3},
    ],
    ids=["qv-dropout", "per-layer-all"],
)
def test_both_paths_report_the_same_curve(workload, config):
    """Today's LoRA configs: the same count and the same reports (validation loss and accuracy,
    training loss) from the peft path and the own path, to 1e-6 relative."""
    own, own_reports = _reports({**workload, "peft_engine": "own"}, config)
    peft, peft_reports = _reports({**workload, "peft_engine": "peft"}, config)
    assert own["trainable_params"] == peft["trainable_params"]
    assert len(own_reports) == len(peft_reports) == 4
    for a, b in zip(own_reports, peft_reports, strict=True):
        for key in TASK:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (key, a, b)
    assert own_reports[-1]["train_loss"] < own_reports[0]["train_loss"]


def test_lora_plus_trains_b_at_its_ratio(workload):
    config = {"lora.rank": 4, "lora.targets": "q,v", "lr": 1e-3, "lora.plus_ratio": 16}
    trainer = PeftTrainer(workload, config, TrialContext("t"))
    assert trainer.group_lrs()["plus"] == pytest.approx(16e-3)
    assert trainer.group_lrs()["decay"] == pytest.approx(1e-3)
    from autopeft.trials.optimizer import build_optimizer

    model = trainer.build_model(3, ("a", "b", "c"))
    optimizer = build_optimizer(model, trainer.group_lrs(), 0.0, 1e-3, foreach=False)
    groups = {g["name"]: g for g in optimizer.param_groups}
    names = {id(p): n for n, p in model.named_parameters()}
    assert groups["plus"]["params"] and all(
        "lora_B" in names[id(p)] for p in groups["plus"]["params"]
    )
    assert not any("lora_B" in names[id(p)] for p in groups["decay"]["params"])
    plain, _ = _reports(workload, {**config, "lora.plus_ratio": 1})
    plus, _ = _reports(workload, config)
    assert plus["train_loss"] != pytest.approx(plain["train_loss"], rel=1e-4)  # the ratio acts


def test_adalora_trial_prunes_and_resumes(workload, tmp_path):
    """AdaLoRA in a trial: its schedule is the trial's steps, the kept singular values end at the
    target budget, and a trial cut at a report resumes from its checkpoint with the pruning."""
    config = {
        "adalora.rank": 6,
        "adalora.target_rank": 2,
        "adalora.targets": "q,v",
        "lr": 5e-3,
        "epochs": 4,
    }
    out, reports = _reports(workload, config, checkpoint_dir=tmp_path / "a")
    assert out["budget_reached"] == 1 and len(reports) == 8
    saved = load_file(str(tmp_path / "a" / ckpt.WEIGHTS))
    kept = [int((t != 0).sum()) for n, t in saved.items() if "lora_E" in n]
    layers = 2  # the tiny BERT
    assert len(kept) == 2 * layers and sum(kept) == 2 * len(kept)  # target_rank 2 on average
    # cut after 3 reports, then resumed: it still ends at the budget
    _reports(workload, config, checkpoint_dir=tmp_path / "b", budget={"step": 3})
    resumed, _ = _reports(
        workload, config, checkpoint_dir=tmp_path / "b", restore_dir=tmp_path / "b"
    )
    assert resumed["budget_reached"] == 1
    kept = [
        int((t != 0).sum())
        for n, t in load_file(str(tmp_path / "b" / ckpt.WEIGHTS)).items()
        if "lora_E" in n
    ]
    assert sum(kept) == 2 * len(kept)


@pytest.mark.parametrize(
    "config",
    [
        {"lora.rank": 4, "lora.variant": "dora", "lora.targets": "q,v"},
        {"lora.rank": 4, "lora.variant": "rslora", "lora.init": "pissa", "lora.targets": "q,v"},
        {"vera.rank": 16, "vera.targets": "q,v,ffn_in"},
        {"loha.rank": 2, "loha.targets": "q,v"},
        {"lokr.rank": 2, "lokr.targets": "q,v,o"},
        {"method": "lokr", "lokr.rank": 2, "lora.targets": "q,v"},  # a preset's extra keys
        {"prompt.length": 6, "prompt.init": "vocab"},
    ],
    ids=["dora", "rslora-pissa", "vera", "loha", "lokr", "preset-keys", "prompt"],
)
def test_each_method_trains_in_a_trial(workload, config, tiny_model):
    from transformers import AutoConfig

    from autopeft.peft import count_trainable

    out, reports = _reports(workload, {**config, "lr": 5e-3})
    assert out["trainable_params"] == count_trainable(
        config, AutoConfig.from_pretrained(tiny_model), 3
    )
    assert reports[-1]["train_loss"] < reports[0]["train_loss"] + 0.05


@pytest.mark.parametrize("engine", ["own", "peft", "before"])
def test_a_checkpoint_exports_with_the_path_that_trained_it(workload, tmp_path, engine):
    """The service's export rebuilds a trial the way it was injected (the tensor names differ):
    a checkpoint from before peft injected LoRA (no "engine" in its meta) is the own path."""
    import json

    from autopeft.api.services.export import ensure_peft_adapter
    from autopeft.peft import load_adapter
    from autopeft.trials.checkpoint import META

    config = {"lora.rank": 4, "lora.targets": "q,v", "lr": 5e-3}
    trained = "own" if engine == "before" else engine
    run_workload(
        {**workload, "peft_engine": trained},
        config,
        TrialContext("t", checkpoint_dir=tmp_path / "checkpoint"),
    )
    meta = json.loads((tmp_path / "checkpoint" / META).read_text())
    assert meta["engine"] == trained
    if engine == "before":
        del meta["engine"]
        (tmp_path / "checkpoint" / META).write_text(json.dumps(meta))
    adapter = ensure_peft_adapter({"workload": workload}, config, 1, tmp_path)
    assert (adapter / "adapter_config.json").is_file()  # peft's format either way
    stored = json.loads((adapter / "autopeft_config.json").read_text())
    assert stored["engine"] == trained
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(workload["model"], num_labels=3)
    load_adapter(base, adapter)  # every tensor fits


def test_a_trial_resumes_the_way_its_checkpoint_was_injected(workload, tmp_path):
    """A checkpoint written by the own path (a study started before peft injected LoRA) resumes
    under the default engine, the same as a straight own-path run."""
    config = {"lora.rank": 4, "lora.targets": "q,v", "lr": 3e-3}
    own = {**workload, "peft_engine": "own"}
    straight, _ = _reports(own, config)
    _reports(own, config, checkpoint_dir=tmp_path / "c", budget={"step": 2})
    resumed, _ = _reports(
        workload, config, checkpoint_dir=tmp_path / "c", restore_dir=tmp_path / "c"
    )
    assert resumed["budget_reached"] == 1
    assert resumed["accuracy"] == straight["accuracy"] and resumed["loss"] == pytest.approx(
        straight["loss"], rel=1e-6
    )


def test_a_prompt_tuned_trial_resumes_as_if_never_cut(workload, tmp_path):
    """Prompt tuning's checkpoint (the virtual tokens and the head) restores exactly: a trial cut
    after 2 reports and resumed ends where a straight run ends."""
    config = {"prompt.length": 4, "lr": 1e-2}
    straight, _ = _reports(workload, config)
    _reports(workload, config, checkpoint_dir=tmp_path / "p", budget={"step": 2})
    saved = load_file(str(tmp_path / "p" / ckpt.WEIGHTS))
    assert saved["autopeft_prompt.embedding.weight"].shape[0] == 4
    resumed, _ = _reports(
        workload, config, checkpoint_dir=tmp_path / "p", restore_dir=tmp_path / "p"
    )
    assert resumed["budget_reached"] == 1
    assert resumed["accuracy"] == straight["accuracy"] and resumed["loss"] == pytest.approx(
        straight["loss"], rel=1e-6
    )
