"""The tracking thread: trial events of every study go through one queue to the study's sinks.

The scheduler's threads only enqueue (:class:`StudyTracker`: ``report``, ``ended``, ``tested``,
``close``), so a slow or unreachable tracking store never delays a report's answer, and nothing a
sink raises reaches a trial or the scheduler: it is logged, recorded on the study
(``spec.tracking_errors``, the first :data:`MAX_RECORDED`) and, after
:data:`MAX_CONSECUTIVE_FAILURES` failures in a row, that sink is dropped for the rest of the run.
One thread for all studies also serialises the writes to a shared SQLite store.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from autopeft.api.artifacts import trial_dir
from autopeft.api.models import Study, Trial, TrialReport
from autopeft.api.tracking.rules import TrackingRules

log = logging.getLogger("autopeft.tracking")

MAX_RECORDED = 20
MAX_CONSECUTIVE_FAILURES = 3
_ENDED = ("complete", "pruned", "failed")


class TrackingHub:
    """Owns the tracking thread (started with the first study that tracks anything)."""

    def __init__(self, db, rules: TrackingRules, artifacts_dir: Path, resolve_workload=None):
        self.db, self.rules, self.artifacts_dir = db, rules, Path(artifacts_dir)
        self.resolve_workload = resolve_workload or (lambda workload: workload)
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def tracker(self, study_id: int, name: str, spec: dict[str, Any]) -> StudyTracker | None:
        """The study's tracker, or None when its spec tracks nothing."""
        tracking = spec.get("tracking") or {}
        if not (tracking.get("mlflow") is not None or tracking.get("tensorboard") is not None):
            return None
        with self._lock:
            if self._closed:
                return None
            if self._thread is None:
                # an unreachable tracking server answers within seconds, not minutes of retries
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
                self._thread = threading.Thread(
                    target=self._loop, daemon=True, name="autopeft-tracking"
                )
                self._thread.start()
        return StudyTracker(self, study_id, name, spec)

    def put(self, tracker: StudyTracker, op: str, *args: Any) -> None:
        self._queue.put((tracker, op, args))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            tracker, op, args = item
            try:
                getattr(tracker, op)(*args)
            except Exception as err:  # never reaches the scheduler
                log.warning("tracking of study %s: %s failed: %s", tracker.study_id, op, err)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (at most ``timeout`` seconds), then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            if thread.is_alive():
                log.warning("tracking: %d event(s) not written at exit", self._queue.qsize())


class StudyTracker:
    """One study's sinks. Public methods enqueue; ``_``-methods run on the tracking thread."""

    def __init__(self, hub: TrackingHub, study_id: int, name: str, spec: dict[str, Any]):
        self.hub, self.study_id, self.name = hub, study_id, name
        self.spec = spec
        self.sinks: list[Any] | None = None  # built on the tracking thread
        self.failures: dict[str, int] = {}
        self.first_config: dict[int, dict[str, Any]] = {}
        self.last_values: dict[int, dict[str, Any]] = {}  # trial id -> its last report's values

    # -- called by the scheduler --------------------------------------------------------------
    def report(self, trial_id: int, step: int, values: dict[str, Any]) -> None:
        self.hub.put(self, "_report", trial_id, step, dict(values))

    def ended(self, trial_id: int) -> None:
        """The trial's run ended (whatever became of it: only a final state ends its run)."""
        self.hub.put(self, "_end", trial_id)

    def tested(self, trial_id: int) -> None:
        self.hub.put(self, "_tested", trial_id)

    def close(self) -> None:
        """The runner stops: end the runs of trials that ended without a run of theirs (e.g. a
        cancelled queued trial, a reused warm-start result) and close the event files."""
        self.hub.put(self, "_close")

    # -- on the tracking thread ---------------------------------------------------------------
    def _setup(self) -> list[Any]:
        if self.sinks is not None:
            return self.sinks
        from autopeft.api.tracking.mlflow_sink import MlflowSink
        from autopeft.api.tracking.tensorboard_sink import TensorboardSink

        self.sinks = []
        tracking = self.spec.get("tracking") or {}
        study = {"id": self.study_id, "name": self.name}
        for key, cls in (("mlflow", MlflowSink), ("tensorboard", TensorboardSink)):
            if tracking.get(key) is None:
                continue
            try:
                self.sinks.append(cls(tracking[key], self.hub.rules, study))
            except Exception as err:
                self._record(key, None, f"could not start: {type(err).__name__}: {err}", fatal=True)
        return self.sinks

    def _each(self, trial_id: int | None, call) -> None:
        for sink in list(self._setup()):
            try:
                call(sink)
                self.failures[sink.name] = 0
            except Exception as err:
                self.failures[sink.name] = self.failures.get(sink.name, 0) + 1
                fatal = self.failures[sink.name] >= MAX_CONSECUTIVE_FAILURES
                self._record(sink.name, trial_id, f"{type(err).__name__}: {err}", fatal)
                if fatal:
                    self.sinks.remove(sink)
                    try:
                        sink.close()
                    except Exception:
                        pass

    def _record(self, sink: str, trial_id: int | None, message: str, fatal: bool = False) -> None:
        """Log a sink's failure and keep it on the study (``spec.tracking_errors``)."""
        if fatal:
            message += "; this sink is off for the rest of the run"
        log.warning("tracking of study %s, %s: %s", self.study_id, sink, message)
        from autopeft.api.artifacts import public_error

        entry = {
            "sink": sink,
            "trial_id": trial_id,
            "error": (public_error(message) or "")[:1000],
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        }
        try:
            with self.hub.db.write(self.study_id) as s:
                study = s.get(Study, self.study_id, with_for_update=True)
                if study is None:
                    return
                errors = list((study.spec or {}).get("tracking_errors") or [])
                if len(errors) < MAX_RECORDED:
                    spec = copy.deepcopy(study.spec)
                    spec["tracking_errors"] = [*errors, entry]
                    study.spec = spec
        except Exception as err:
            log.warning("tracking of study %s: could not record an error: %s", self.study_id, err)

    def _trial(self, trial_id: int) -> dict[str, Any] | None:
        with self.hub.db.read() as s:
            t = s.get(Trial, trial_id)
            if t is None:
                return None
            trial = {
                "id": t.id,
                "number": t.number,
                "kind": t.kind,
                "label": t.label,
                "state": t.state,
                "config": dict(t.config or {}),
                "budget": dict(t.budget or {}),
                "values": dict(t.values or {}),
                "test_values": dict(t.test_values or {}),
                "error": t.error,
            }
            if t.state in _ENDED:
                trial["last_step"] = (
                    s.scalar(select(func.max(TrialReport.step)).where(TrialReport.trial_id == t.id))
                    or 0
                )
        first = self.first_config.setdefault(trial_id, trial["config"])
        if first != trial["config"]:  # a PBT exploit changed it: params keep the asked config
            trial["final_config"], trial["config"] = trial["config"], first
        return trial

    def _report(self, trial_id: int, step: int, values: dict[str, Any]) -> None:
        trial = self._trial(trial_id)
        if trial is not None:
            self.last_values[trial_id] = values
            self._each(trial_id, lambda sink: sink.report(trial, step, values))

    def _end(self, trial_id: int) -> None:
        trial = self._trial(trial_id)
        if trial is None or trial["state"] not in _ENDED:
            return  # back in the queue (a user's stop), or a PBT member paused between segments
        files = self._files(trial)
        last = self.last_values.pop(trial_id, {})  # final values not already in the last report:
        trial["final"] = {k: v for k, v in trial["values"].items() if last.get(k) != v}

        def end(sink) -> None:
            for skipped in sink.end(trial, files if sink.name == "mlflow" else {}):
                self._record(sink.name, trial_id, skipped)

        self._each(trial_id, end)

    def _files(self, trial: dict[str, Any]) -> dict[str, Path]:
        """What goes to MLflow as the trial's artifacts (``tracking.mlflow.adapter``)."""
        mode = ((self.spec.get("tracking") or {}).get("mlflow") or {}).get("adapter", "peft")
        if mode == "none" or trial["state"] == "failed" or not self._setup():
            return {}
        root = trial_dir(self.hub.artifacts_dir, self.study_id, trial["number"])
        if mode == "peft":
            from autopeft.api.services.export import ensure_peft_adapter

            spec = {**self.spec, "workload": self.hub.resolve_workload(self.spec["workload"])}
            try:
                adapter = ensure_peft_adapter(spec, trial["config"], trial["id"], root)
            except Exception as err:
                adapter = None
                self._record("mlflow", trial["id"], f"adapter export failed: {err}")
            if adapter is not None:
                return {"adapter": adapter}
        ckpt = root / "checkpoint"
        return {"checkpoint": ckpt} if ckpt.is_dir() and any(ckpt.iterdir()) else {}

    def _tested(self, trial_id: int) -> None:
        trial = self._trial(trial_id)
        if trial is not None and trial["test_values"]:
            self._each(trial_id, lambda sink: sink.tested(trial, trial["test_values"]))

    def _close(self) -> None:
        mlflow = next((sink for sink in self._setup() if sink.name == "mlflow"), None)
        if mlflow is not None:
            with self.hub.db.read() as s:
                ended = list(
                    s.scalars(
                        select(Trial.id)
                        .where(Trial.study_id == self.study_id, Trial.state.in_(_ENDED))
                        .order_by(Trial.number)
                    )
                )
            for trial_id in ended:
                if trial_id not in mlflow.ended:
                    self._end(trial_id)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:
                log.warning("tracking of study %s: closing %s: %s", self.study_id, sink.name, err)
