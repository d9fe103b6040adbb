"""Test hook at the CUDA boundary, for trial processes (local workers and Ray workers) whose
``PYTHONPATH`` holds this folder: with ``AUTOPEFT_TEST_OOM_DIR`` set, the first training step of every
attempt of the real peft trainer records what the trial was given (``placed-<trial>-<uuid>.json``: its
``CUDA_VISIBLE_DEVICES`` and granted resources), and the first attempt of trial number 0 raises
``torch.OutOfMemoryError`` at its first step, as the CUDA allocator would. Nothing else is changed:
the trainer, the executors, placement and retry logic are the real ones. Inert without the variable."""

import os

if os.environ.get("AUTOPEFT_TEST_OOM_DIR"):
    import json
    import time
    import uuid
    from pathlib import Path

    import torch

    from autopeft.trials import train

    _real_step = train.PeftTrainer._train_step

    def _train_step(self, *args, **kwargs):
        folder = Path(os.environ["AUTOPEFT_TEST_OOM_DIR"])
        ctx = self.trial
        if not getattr(self, "_placement_recorded", False):
            self._placement_recorded = True
            placed = folder / f"placed-{ctx.trial_id}-{uuid.uuid4().hex[:8]}.json"
            placed.write_text(
                json.dumps(
                    {
                        "trial_id": ctx.trial_id,
                        "number": ctx.number,
                        "at": time.time(),
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "resources": dict(ctx.resources or {}),
                    }
                )
            )
        marker = folder / f"oom-{ctx.trial_id}"
        if ctx.number == 0 and not marker.exists():
            marker.write_text("raised")
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 MiB (test hook)"
            )
        return _real_step(self, *args, **kwargs)

    train.PeftTrainer._train_step = _train_step
