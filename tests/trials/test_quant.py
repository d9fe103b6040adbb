"""``workload.quantization: "4bit"`` (QLoRA-style NF4 base through bitsandbytes) on the tiny pretrained
Llama-style decoder: on bitsandbytes' CPU backend here, on CUDA where there is one (``gpu`` mark)."""

from __future__ import annotations

import pytest
import torch

from autopeft.errors import InvalidConfig
from autopeft.trials import TrialContext, run_workload, validate_workload

bnb = pytest.importorskip("bitsandbytes")

CONFIG = {"lora.rank": 8, "lora.targets": "all", "lr": 1e-2, "epochs": 3}


def _workload(model, dataset, **extra):
    return {
        "kind": "peft",
        "task": "causal_lm",
        "model": str(model),
        "dataset": str(dataset),
        "quantization": "4bit",
        "validation_fraction": 0.2,
        "batch_size": 16,
        "max_length": 48,
        "evals_per_epoch": 1,
        **extra,
    }


def _lora_grad(model, ids):
    model.train()
    model.zero_grad()
    model(input_ids=ids).logits.pow(2).mean().backward()
    proj = model.model.layers[0].self_attn.q_proj  # injected by peft (or by the own path)
    b = proj.lora_B["default"] if hasattr(proj, "lora_B") else proj.lora["all"].lora_B
    return b.weight.grad  # (A gets none while B is zero)


def test_qlora_sft_learns_on_a_4bit_base(tiny_llama, sft_jsonl, tmp_path):
    from transformers import AutoConfig

    import autopeft
    from autopeft.trials.causal import CausalLmTrainer

    trainer = CausalLmTrainer(_workload(tiny_llama, sft_jsonl), CONFIG, TrialContext("t"))
    model = trainer.build_model(0, ())
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.k_proj.base_layer, bnb.nn.Linear4bit)
    assert isinstance(layer.mlp.down_proj.base_layer, bnb.nn.Linear4bit)
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    # an evaluation pass in between must not cut the gradient through the 4-bit layers
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    before = _lora_grad(model, ids).clone()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = _lora_grad(model, ids)
    assert after is not None and before.abs().max() > 0 and torch.allclose(before, after)

    reports = []
    out = run_workload(
        _workload(tiny_llama, sft_jsonl),
        CONFIG,
        TrialContext("t", checkpoint_dir=tmp_path, reporter=lambda s, m: reports.append(m)),
    )
    full = run_workload(
        {**_workload(tiny_llama, sft_jsonl), "quantization": None},
        {**CONFIG, "epochs": 1},
        TrialContext("t"),
    )
    assert reports[-1]["loss"] < reports[0]["loss"] - 0.1 and out["exact_match"] > 0.5
    assert (
        out["trainable_params"]
        == full["trainable_params"]
        == autopeft.count_trainable(CONFIG, AutoConfig.from_pretrained(tiny_llama), None)
    )
    assert out["base_params"] == full["base_params"]  # counted as the full-precision model has them
    tested = run_workload(
        {**_workload(tiny_llama, sft_jsonl), "evaluate": "test"},
        CONFIG,
        TrialContext("t", restore_dir=tmp_path),
    )
    assert tested["test_examples"] == 24


def test_a_classifier_on_a_4bit_gpt2(tiny_gpt2, small_csv):
    """GPT-2's Conv1D projections are quantised too (fused qkv: LoRA on their slices); the new head
    stays in full precision and trains."""
    from autopeft.trials.train import PeftTrainer

    workload = {
        "kind": "peft",
        "model": str(tiny_gpt2),
        "dataset": str(small_csv),
        "quantization": "4bit",
        "validation_fraction": 0.2,
        "batch_size": 16,
        "max_length": 32,
        "evals_per_epoch": 1,
    }
    model = PeftTrainer(workload, {"lora.rank": 4}, TrialContext("t")).build_model(
        3, ("neg", "neutral", "pos")
    )
    assert isinstance(model.transformer.h[0].attn.c_attn.base_layer, bnb.nn.Linear4bit)
    assert model.score.weight.dtype == torch.float32 and model.score.weight.requires_grad
    out = run_workload(workload, {"lora.rank": 4, "lr": 3e-3, "epochs": 2}, TrialContext("t"))
    assert out["trainable_params"] == 2 * 4 * (64 * 2 + 64 * 2) + 64 * 3 and out["accuracy"] > 0.45


def test_quantization_refusals(tiny_llama, sft_jsonl):
    for extra in ({"quantization": "8bit"}, {"full_finetune": True}):
        with pytest.raises(InvalidConfig) as err:
            validate_workload(_workload(tiny_llama, sft_jsonl, **extra))
        assert err.value.field == "workload.quantization"


def test_memory_prediction_knows_the_4bit_base(tiny_llama, sft_jsonl):
    from transformers import AutoConfig

    from autopeft.peft.memory import BYTES_PER_4BIT_WEIGHT, quantized_weights
    from autopeft.workers.placement import predicted_memory_bytes

    wl = validate_workload(_workload(tiny_llama, sft_jsonl))
    q = predicted_memory_bytes(wl, CONFIG)
    full = predicted_memory_bytes({**wl, "quantization": None}, CONFIG)
    # 2 blocks of q, o (64 x 64), k, v (64 x 32), gate, up, down (64 x 128), stored as float32 on disk
    n = quantized_weights(AutoConfig.from_pretrained(tiny_llama))
    assert n == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)
    assert full - q == 4 * n - int(n * BYTES_PER_4BIT_WEIGHT)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_qlora_on_cuda_in_bf16(tiny_llama, sft_jsonl, tmp_path):
    reports = []
    out = run_workload(
        _workload(tiny_llama, sft_jsonl, precision="bf16", device="cuda"),
        CONFIG,
        TrialContext("t", checkpoint_dir=tmp_path, reporter=lambda s, m: reports.append(m)),
    )
    assert reports[-1]["loss"] < reports[0]["loss"] - 0.1 and out["exact_match"] > 0.5
    assert out["peak_memory_mb"] > 0
