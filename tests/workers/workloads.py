"""Python workloads of the Ray executor tests (imported by Ray workers as ``tests.workers.workloads``).

Each records every attempt it runs as a JSON file in ``config["record_dir"]`` (or
``$AUTOPEFT_TEST_RECORD_DIR``): trial number, node, pid, and start / end times, so tests prove
placement and concurrency from what happened rather than from timings.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path


def _record_dir(config: dict) -> Path | None:
    d = config.get("record_dir") or os.environ.get("AUTOPEFT_TEST_RECORD_DIR")
    return Path(d) if d else None


def _node() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return "local"


class _Record:
    """Writes ``<record_dir>/<number>-<uuid>.json`` at start (no end) and again at the end."""

    def __init__(self, config: dict, trial):
        self.dir = _record_dir(config)
        self.data = {
            "number": trial.number,
            "trial_id": trial.trial_id,
            "node": _node(),
            "pid": os.getpid(),
            "node_name": os.environ.get("AUTOPEFT_TEST_NODE"),
            "start": time.time(),
            "end": None,
            "resources": dict(trial.resources or {}),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        self.path = self.dir / f"{trial.number}-{uuid.uuid4().hex[:8]}.json" if self.dir else None
        self._write()

    def _write(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.rename(self.path)

    def end(self, **extra) -> None:
        self.data.update(extra, end=time.time())
        self._write()


def records(record_dir: str | Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(record_dir).glob("*.json"))]


def _metrics(config: dict) -> dict[str, float]:
    x, y = float(config.get("x", 0.3)), float(config.get("y", 0.0))
    return {"accuracy": 1.0 - (x - 0.3) ** 2 - 0.5 * y * y, "cost": x + 0.1 * y}


def quick(config, trial):
    """Three reports, no waiting."""
    rec = _Record(config, trial)
    for step in range(3):
        if not trial.report(step, {"accuracy": 0.1 * step}):
            break
    rec.end()
    return _metrics(config)


def steps(config, trial):
    """``config["steps"]`` reports (default 4), ``config["step_s"]`` seconds apart (default 0.5)."""
    rec = _Record(config, trial)
    for step in range(int(config.get("steps", 4))):
        time.sleep(float(config.get("step_s", 0.5)))
        if not trial.report(step, {"accuracy": 0.1 * step}):
            break
    rec.end()
    return _metrics(config)


def until_released(config, trial):
    """Reports, then waits until the file ``config["release"]`` exists (tests hold trials running)."""
    rec = _Record(config, trial)
    trial.report(0, {"accuracy": 0.0})
    release = Path(config["release"])
    deadline = time.monotonic() + 300
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    rec.end()
    return _metrics(config)


def crash_once(config, trial):
    """The first attempt dies hard (like a segfault or an OOM kill); later attempts complete."""
    rec = _Record(config, trial)
    marker = Path(config["marker"])
    trial.report(0, {"accuracy": 0.0})
    if not marker.exists():
        marker.write_text("crashed")
        print("about to crash hard", flush=True)
        os._exit(13)
    rec.end()
    return _metrics(config)


def crash(config, trial):
    """Every attempt dies without a result."""
    trial.report(0, {"accuracy": 0.0})
    os._exit(13)


def raises(config, trial):
    raise ValueError(f"bad luck with x={float(config.get('x', 0.3)):.3f}")


def checkpointing(config, trial):
    """Writes ``state.json`` (a counter) into its checkpoint folder at every step, continuing the
    counter of ``restore_dir`` when there is one; returns where it started from."""
    rec = _Record(config, trial)
    start = 0
    if trial.restore_dir is not None and (Path(trial.restore_dir) / "state.json").is_file():
        start = json.loads((Path(trial.restore_dir) / "state.json").read_text())["counter"]
    counter = start
    for step in range(int(config.get("steps", 2))):
        counter += 1
        Path(trial.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        (Path(trial.checkpoint_dir) / "state.json").write_text(json.dumps({"counter": counter}))
        if not trial.report(step, {"counter": float(counter)}):
            break
    rec.end(checkpoint_dir=str(trial.checkpoint_dir), restore_dir=str(trial.restore_dir))
    return {"start": float(start), "counter": float(counter)}


def gpu_probe(config, trial):
    """What a GPU trial sees: torch's CUDA devices and what the executor granted."""
    import torch

    rec = _Record(config, trial)
    ok = torch.cuda.is_available()
    if ok:
        x = torch.ones(256, 256, device="cuda")
        ok = float((x @ x).sum().item()) == 256.0**3
    rec.end()
    return {
        "cuda": float(ok),
        "devices": float(torch.cuda.device_count()),
        "gpus": float(trial.gpus or 0),
    }


def oom_once(config, trial):
    """The first attempt raises CUDA out of memory (``torch.OutOfMemoryError``, what the allocator
    raises; the fake is this boundary only); later attempts complete."""
    import torch

    rec = _Record(config, trial)
    marker = Path(config["marker"])
    if not marker.exists():
        marker.write_text("raised")
        rec.end()
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (test workload)"
        )
    rec.end()
    return _metrics(config)


def oom_always(config, trial):
    """Every attempt runs out of CUDA memory."""
    import torch

    _Record(config, trial).end()
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test workload)")
