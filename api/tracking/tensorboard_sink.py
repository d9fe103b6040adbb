"""TensorBoard: event files per trial (``spec.tracking.tensorboard``), written with tensorboardX.

``<dir>/trial-<number>/events.out.tfevents.*``: every reported metric as a scalar at its step, the
config as text at step 0, the final and held-out test values at the last step. ``<dir>`` is
``<artifacts_dir>/tensorboard/study-<id>`` unless the spec names one (see ``tracking.rules``).
Only the tracking thread (``tracking.hub``) calls this class.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

from autopeft.api.tracking.rules import TrackingRules


class TensorboardSink:
    name = "tensorboard"

    def __init__(self, options: dict[str, Any], rules: TrackingRules, study: dict[str, Any]):
        import tensorboardX  # noqa: F401  (fails here, once, when it is missing)

        self.root = rules.tensorboard_dir(options.get("dir"), study["id"])
        self.writers: dict[int, Any] = {}
        self.last_step: dict[int, int] = {}

    def _writer(self, trial: dict[str, Any]):
        from tensorboardX import SummaryWriter

        tid = trial["id"]
        if tid not in self.writers:
            folder = Path(self.root) / f"trial-{trial['number']:05d}"
            # tensorboardX names files by the second: a suffix keeps a reopened trial's file apart
            suffix = f".{uuid.uuid4().hex[:8]}"
            writer = SummaryWriter(logdir=str(folder), flush_secs=30, filename_suffix=suffix)
            writer.add_text("config", json.dumps(trial.get("config") or {}, indent=1), 0)
            self.writers[tid] = writer
        return self.writers[tid]

    def _scalars(self, writer, values: dict[str, Any], step: int) -> None:
        for key, value in sorted((values or {}).items()):
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                writer.add_scalar(str(key), float(value), int(step))

    def report(self, trial: dict[str, Any], step: int, values: dict[str, Any]) -> None:
        writer = self._writer(trial)
        self._scalars(writer, values, step)
        self.last_step[trial["id"]] = max(self.last_step.get(trial["id"], 0), int(step))
        writer.flush()

    def end(self, trial: dict[str, Any], artifacts: dict[str, Path]) -> list[str]:
        writer = self._writer(trial)
        step = self.last_step.get(trial["id"], trial.get("last_step") or 0)
        self._scalars(writer, trial.get("final") or {}, step)
        self._scalars(writer, trial.get("test_values") or {}, step)
        writer.close()
        self.writers.pop(trial["id"], None)
        return []

    def tested(self, trial: dict[str, Any], test_values: dict[str, Any]) -> None:
        writer = self._writer(trial)
        self._scalars(
            writer, test_values, self.last_step.get(trial["id"], trial.get("last_step") or 0)
        )
        writer.close()
        self.writers.pop(trial["id"], None)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
