"""Python workloads for the controller tests and the API benchmark.

They run inside the trial processes of the local executor, which import this module by
``tests.api.workloads:<fn>`` (the server is started with the repository root on the workers'
PYTHONPATH). Each takes ``(config, trial)`` and returns metrics; the space they expect is
``SPACE`` (two floats ``x`` and ``y`` in [0, 1]).
"""

from __future__ import annotations

import os
import time

SPACE = {
    "params": {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "y": {"type": "float", "low": 0.0, "high": 1.0},
    }
}
OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "cost", "direction": "minimize"},
]


def _metrics(config: dict) -> dict[str, float]:
    x, y = float(config["x"]), float(config["y"])
    return {"accuracy": 1.0 - (x - 0.3) ** 2 - 0.5 * y * y, "cost": x + 0.1 * y}


def quick(config, trial):
    """Three reports, no waiting."""
    for step in range(3):
        if not trial.report(step, {"accuracy": 0.1 * step}):
            break
    return _metrics(config)


def sleepy(config, trial):
    """About ``AUTOPEFT_TEST_SLEEP`` seconds (default 0.6) in 3 reported steps."""
    total = float(os.environ.get("AUTOPEFT_TEST_SLEEP", "0.6"))
    for step in range(3):
        time.sleep(total / 3)
        if not trial.report(step, {"accuracy": 0.1 * step}):
            break
    return _metrics(config)


def one_second(config, trial):
    """Exactly one second of (sleeping) work, one report at the end: the overhead benchmark."""
    time.sleep(1.0)
    trial.report(0, _metrics(config))
    return _metrics(config)


def chatty(config, trial):
    """``AUTOPEFT_TEST_REPORTS`` (default 40) reports as fast as the controller answers."""
    n = int(os.environ.get("AUTOPEFT_TEST_REPORTS", "40"))
    for step in range(n):
        trial.report(step, {"accuracy": step / n, "cost": 1.0})
    return _metrics(config)


def crash(config, trial):
    """The process dies without a result (like a segfault or an OOM kill)."""
    trial.report(0, {"accuracy": 0.0})
    print("about to crash hard", flush=True)
    os._exit(13)


def raises(config, trial):
    raise ValueError(f"bad luck with x={config['x']:.3f}")


def no_objective(config, trial):
    return {"something_else": 1.0}


def with_checkpoint(config, trial):
    """Writes a small 'adapter' into its checkpoint folder (exported by /trials/{id}/adapter)."""
    from pathlib import Path

    folder = Path(trial.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(f'{{"x": {config["x"]!r}}}')
    (folder / "weights.bin").write_bytes(bytes(range(256)))
    trial.report(0, {"accuracy": 0.5})
    return _metrics(config)


def nan_metric(config, trial):
    """A finite objective plus a non-finite side metric (stored as null, listed as valid JSON)."""
    trial.report(0, {"accuracy": 0.5, "loss": float("nan")})
    return {**_metrics(config), "loss": float("nan"), "grad": float("inf")}


PBT_SPACE = {"params": {"lr": {"type": "float", "low": 0.001, "high": 1.0, "log": True}}}


def pbt_toy(config, trial):
    """8 steps; the score grows by lr per step; state checkpointed each step (atomically) and
    restored from ``restore_dir`` when PBT cloned another trial."""
    import json
    from pathlib import Path

    step, score = 0, 0.0
    if trial.restore_dir is not None and (Path(trial.restore_dir) / "state.json").is_file():
        state = json.loads((Path(trial.restore_dir) / "state.json").read_text())
        step, score = state["step"], state["score"]
    ckpt = Path(trial.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    while step < 8:
        time.sleep(float(os.environ.get("AUTOPEFT_TEST_STEP_S", "0.25")))
        step += 1
        score += float(config["lr"])
        tmp = ckpt / "state.json.tmp"
        tmp.write_text(json.dumps({"step": step, "score": score}))
        tmp.replace(ckpt / "state.json")
        if not trial.report(step, {"accuracy": score, "cost": 1.0}):
            break
    return {"accuracy": score, "cost": 1.0}


def report_then_hang(config, trial):
    """Reports once at once, then sleeps a minute (to be cancelled)."""
    trial.report(0, {"accuracy": 0.0})
    time.sleep(60)
    return _metrics(config)


def gated(config, trial):
    """Waits (up to 5 minutes) for the file named by ``AUTOPEFT_TEST_GATE``, then as ``quick``."""
    from pathlib import Path

    gate = Path(os.environ["AUTOPEFT_TEST_GATE"])
    deadline = time.monotonic() + 300
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return quick(config, trial)


def stuck_first(config, trial):
    """Trial number 0 never ends on its own: it writes its pid to ``<checkpoint_dir>/pid`` and reports
    every 0.1 s for 10 minutes, ignoring "stop" (only killing its process ends it). Others: ``quick``."""
    from pathlib import Path

    if trial.number != 0:
        return quick(config, trial)
    folder = Path(trial.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pid.part").write_text(str(os.getpid()))
    (folder / "pid.part").rename(folder / "pid")
    for step in range(6000):
        trial.report(step, {"accuracy": 0.0})
        time.sleep(0.1)
    return _metrics(config)


def counted(config, trial):
    """As ``quick``, and appends a line to the file named by ``AUTOPEFT_TEST_COUNTER``: one per training."""
    with open(os.environ["AUTOPEFT_TEST_COUNTER"], "a") as fh:
        fh.write(f"{trial.number}\n")
    return quick(config, trial)


def one_epoch(config, trial):
    """Reports one training epoch (what ``max_epochs`` counts), after a short pause."""
    time.sleep(float(os.environ.get("AUTOPEFT_TEST_SLEEP", "0.2")))
    return {**_metrics(config), "epochs_trained": 1.0}
