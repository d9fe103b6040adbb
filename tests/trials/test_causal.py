"""The causal_lm task on tiny pretrained decoders (tests/decoders.py): SFT with LoRA learns "text ->
sentiment word", exact match is greedy decoding, resume and held-out evaluation work as for the
classifier, and a decoder without a pad token trains in batches (classification too)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autopeft.errors import InvalidConfig
from autopeft.trials import TrialContext, run_workload
from autopeft.trials import checkpoint as ckpt
from tests.decoders import WORDS

LORA = {"lora.rank": 8, "lora.targets": "q,k,v,o", "lr": 1e-2}


def _workload(model, dataset, **extra):
    # 240 rows -> 48 validation, 24 test, 168 train; batch 16 -> 11 steps an epoch
    return {
        "kind": "peft",
        "task": "causal_lm",
        "model": str(model),
        "dataset": str(dataset),
        "validation_fraction": 0.2,
        "batch_size": 16,
        "max_length": 48,
        "evals_per_epoch": 1,
        **extra,
    }


def _run(workload, config, **trial):
    reports = []
    out = run_workload(
        workload,
        config,
        TrialContext("t", reporter=lambda s, m: reports.append(m) or "continue", **trial),
    )
    return out, reports


def test_gpt2_without_a_pad_token_classifies_in_batches(tiny_gpt2, small_csv):
    """transformers' GPT-2 classifier refuses batches > 1 without a pad token ("Cannot handle batch
    sizes > 1 if no padding token is defined"); the trial gives it the id batches are padded with."""
    from transformers import AutoConfig, AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_gpt2).pad_token_id is None
    assert AutoConfig.from_pretrained(tiny_gpt2).pad_token_id is None
    out, reports = _run(
        {
            "kind": "peft",
            "model": str(tiny_gpt2),
            "dataset": str(small_csv),
            "batch_size": 16,
            "max_length": 32,
            "validation_fraction": 0.2,
            "evals_per_epoch": 1,
        },
        {"lora.rank": 4, "lr": 3e-3, "epochs": 2},
    )
    assert len(reports) == 2 and out["budget_reached"] == 1.0 and 0 <= out["accuracy"] <= 1


@pytest.fixture(scope="module")
def sft_runs(request, sft_jsonl, tmp_path_factory):
    """One 4-epoch LoRA SFT run per decoder, made on first use: (workload, metrics, reports, checkpoint)."""
    runs = {}

    def run(arch):
        if arch not in runs:
            workload = _workload(request.getfixturevalue(f"tiny_{arch}"), sft_jsonl)
            folder = tmp_path_factory.mktemp(f"sft_{arch}")
            runs[arch] = (
                workload,
                *_run(workload, {**LORA, "epochs": 4}, checkpoint_dir=folder),
                folder,
            )
        return runs[arch]

    return run


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sft_with_lora_learns_the_sentiment_word(arch, sft_runs, sft_jsonl):
    _, out, reports, folder = sft_runs(arch)
    losses = [r["loss"] for r in reports]
    first, last = reports[0], reports[-1]
    print(f"\n{arch}: eval loss {losses}, exact match {[r['exact_match'] for r in reports]}")
    assert len(reports) == 4 and losses[-1] < losses[0] - 0.2
    assert all(r["perplexity"] == pytest.approx(np.exp(r["loss"])) for r in reports)
    assert all(r["accuracy"] == r["exact_match"] for r in reports)
    labels = [json.loads(line)["completion"] for line in open(sft_jsonl)]
    majority = max(labels.count(w) for w in set(labels)) / len(labels)
    assert last["exact_match"] > majority + 0.15 and last["exact_match"] > first["exact_match"]
    assert (
        out["accuracy"] == last["accuracy"]
        and out["budget_reached"] == 1.0
        and out["epochs_trained"] == 4
    )
    assert out["train_examples"] == 168 and out["eval_examples"] == 48
    # LoRA r8 on q, k, v, o of 2 layers, 64 wide (the Llama's k and v: 32, 2 of its 4 heads), nothing else
    kv = 32 if arch == "llama" else 64
    assert out["trainable_params"] == 2 * 8 * ((64 + 64) * 2 + (64 + kv) * 2)
    assert all({"lora_A", "lora_B"} & set(n.split(".")) for n in load_file(folder / ckpt.WEIGHTS))


def test_exact_match_is_greedy_decoding(sft_runs):
    """Per example, the metric's match (teacher-forced argmax) equals generate()'s greedy output."""
    from autopeft.trials.causal import CausalLmTrainer

    workload, _, _, folder = sft_runs("gpt2")
    trainer = CausalLmTrainer(workload, LORA, TrialContext("t"))
    tokens = trainer.prepare_data()
    model = trainer.build_model(0, ())
    ckpt.load(folder, model)
    _, val, _ = trainer.select(tokens)
    hits = []
    for i in val:
        metric = trainer._evaluate(
            model, tokens, np.array([i]), None, 0, torch.autocast("cpu", enabled=False)
        )
        start, stop, n_prompt = tokens.offsets[i], tokens.offsets[i + 1], tokens.prompt_lens[i]
        prompt = torch.from_numpy(tokens.ids[start : start + n_prompt].astype(np.int64))[None]
        completion = tokens.ids[start + n_prompt : stop].tolist()
        with torch.no_grad():
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=len(completion),
                do_sample=False,
                pad_token_id=tokens.pad_id,
            )
        greedy = out[0, n_prompt:].tolist() == completion
        assert metric["exact_match"] == float(greedy), i
        hits.append(greedy)
    assert 0 < sum(hits) < len(hits), "all hits or all misses: the comparison could not fail"


def test_resume_mid_epoch_and_test_evaluation(tiny_llama, sft_jsonl, tmp_path):
    workload = _workload(tiny_llama, sft_jsonl, evals_per_epoch=2)
    config = {**LORA, "epochs": 2}
    straight, _ = _run(workload, config, checkpoint_dir=tmp_path / "straight")
    first, _ = _run(workload, config, checkpoint_dir=tmp_path / "split", budget={"step": 3})
    assert first["epoch"] == pytest.approx(17 / 11) and first["budget_reached"] == 0.0
    resumed, reports = _run(
        workload, config, checkpoint_dir=tmp_path / "split", restore_dir=tmp_path / "split"
    )
    assert len(reports) == 1 and resumed["epoch"] == 2 and resumed["budget_reached"] == 1.0
    for key in ("loss", "perplexity", "exact_match", "train_loss"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-4, abs=1e-5), key
    assert abs(first["loss"] - straight["loss"]) > 1e-3
    tested = run_workload(
        {**workload, "evaluate": "test"},
        config,
        TrialContext("t", restore_dir=tmp_path / "straight"),
    )
    assert set(tested) == {
        "test_loss",
        "test_perplexity",
        "test_exact_match",
        "test_accuracy",
        "test_examples",
    }
    assert tested["test_examples"] == 24 and tested["test_accuracy"] == tested["test_exact_match"]
    assert tested["test_loss"] != straight["loss"]


def test_chat_messages_and_a_classification_dataset_as_generation(tiny_llama, small_csv, tmp_path):
    from tests.decoders import write_sft_jsonl

    chat = write_sft_jsonl(tmp_path / "chat.jsonl", 120, chat=True)
    out, reports = _run(_workload(tiny_llama, chat), {**LORA, "epochs": 2})
    assert len(reports) == 2 and reports[1]["loss"] < reports[0]["loss"]
    template = "Review: {text}\nLabel:"
    out, reports = _run(
        _workload(tiny_llama, small_csv, prompt_template=template), {**LORA, "epochs": 1}
    )
    assert out["eval_examples"] == 36 and 0 <= out["exact_match"] <= 1


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"task": "regression"}, "workload.task"),
        ({"linear_probe": True}, "workload.linear_probe"),
        ({"head_lr": 1e-2}, "workload.head_lr"),
        ({"pooling": "mean"}, "workload.pooling"),
        (
            {"prompt_template": "{text} ->"},
            "workload.prompt_template",
        ),  # the file holds prompt/completion
        ({"label_column": "sentiment"}, "workload.label_column"),
    ],
)
def test_causal_workload_refusals(tiny_llama, sft_jsonl, extra, field):
    from autopeft.trials import validate_workload

    with pytest.raises(InvalidConfig) as err:
        validate_workload(_workload(tiny_llama, sft_jsonl, **extra))
    assert err.value.field == field


def test_prompt_template_needs_causal_lm_and_a_placeholder(tiny_model, tiny_llama, small_csv):
    from autopeft.trials import validate_workload

    with pytest.raises(InvalidConfig) as err:
        validate_workload(
            {
                "kind": "peft",
                "model": str(tiny_model),
                "dataset": str(small_csv),
                "prompt_template": "{text}:",
            }
        )
    assert err.value.field == "workload.prompt_template" and "classification" in err.value.message
    for bad in ("no placeholder", "{text} {other}"):
        with pytest.raises(InvalidConfig) as err:
            validate_workload(_workload(tiny_llama, small_csv, prompt_template=bad))
        assert err.value.field == "workload.prompt_template"
    assert validate_workload(_workload(tiny_llama, small_csv))["task"] == "causal_lm"


def test_sentiment_words_are_the_label_set(tiny_gpt2, sft_jsonl):
    from autopeft.trials.causal import CausalLmTrainer

    tokens = CausalLmTrainer(
        _workload(tiny_gpt2, sft_jsonl), LORA, TrialContext("t")
    ).prepare_data()
    assert tokens.label_names == tuple(sorted(WORDS.values()))
    assert np.bincount(tokens.labels).tolist() == [80, 80, 80]


def test_a_config_with_nothing_to_train_is_the_base_model(tiny_llama, sft_jsonl, tmp_path):
    """Every rank 0 (per-layer spaces sample it): no head to train either, so the trial evaluates the
    base model once, at its last report, and is tested like any trial."""
    workload = _workload(tiny_llama, sft_jsonl, evals_per_epoch=2)
    steps = []
    out = run_workload(
        workload,
        {"lora.rank.0": 0, "lora.rank.1": 0, "lr": 1e-3, "epochs": 2},
        TrialContext("t", checkpoint_dir=tmp_path, reporter=lambda s, m: steps.append(s)),
    )
    assert steps == [4] and out["trainable_params"] == 0 and out["epochs_trained"] == 0
    assert out["budget_reached"] == 1.0 and out["loss"] > 0 and 0 <= out["accuracy"] <= 1
    tested = run_workload(
        {**workload, "evaluate": "test"},
        {"lora.rank.0": 0, "lora.rank.1": 0},
        TrialContext("t", restore_dir=tmp_path),
    )
    assert tested["test_examples"] == 24 and tested["test_loss"] > 0
