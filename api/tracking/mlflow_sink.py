"""MLflow: one run per trial in one experiment per study (``spec.tracking.mlflow``).

Run name ``trial-<number>`` (baselines ``baseline-<label>``); tags ``autopeft.study_id``,
``autopeft.study``, ``autopeft.trial_id``, ``autopeft.trial_number``, ``autopeft.kind`` and, when it
ends, ``autopeft.state`` (and ``autopeft.error``). Params: the trial's config as asked (a PBT
exploit's later config goes to the tag ``autopeft.final_config``) and its fidelity (``budget.*``).
Metrics: every report at its step; the final values and held-out ``test_*`` values at the last
step. Status: ``FINISHED`` (complete, pruned), ``FAILED`` (failed). Artifacts: the exported PEFT
adapter under ``adapter/`` (``adapter: "peft"``, the default), the training checkpoint under
``checkpoint/`` (``adapter: "checkpoint"``, or a trial no adapter can be exported for), or nothing
(``"none"``). Runs are found again by their tags after a restart, so a trial keeps one run.
Only the tracking thread (``tracking.hub``) calls this class.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from autopeft.api.tracking.rules import TrackingRules

#: MLflow's batch limits (params / metrics per log_batch call)
_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000
_STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class MlflowSink:
    name = "mlflow"

    def __init__(self, options: dict[str, Any], rules: TrackingRules, study: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        self.options, self.rules, self.study = options, rules, study
        self.uri = rules.mlflow_uri(options.get("tracking_uri"))
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(
            options.get("experiment") or f"autopeft-study-{study['id']}"
        )
        self.runs: dict[int, str] = {}  # trial id -> run id
        self.ended: set[int] = set()  # trial ids whose run is terminated
        self.last_step: dict[int, int] = {}
        self._load_runs()

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # never MLflow's default ./mlruns of the server's cwd
            location = (Path(self.uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
        return self.client.create_experiment(
            name, artifact_location=location, tags={"autopeft.study_id": str(self.study["id"])}
        )

    def _load_runs(self) -> None:
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`autopeft.study_id` = '{self.study['id']}'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                tid = int(run.data.tags.get("autopeft.trial_id", 0))
                if tid and tid not in self.runs:
                    self.runs[tid] = run.info.run_id
                    if run.info.status != "RUNNING":
                        self.ended.add(tid)
            token = page.token
            if not token:
                return

    # -- runs ---------------------------------------------------------------------------------
    def _run_of(self, trial: dict[str, Any]) -> str:
        tid = trial["id"]
        if tid in self.runs:
            return self.runs[tid]
        name = (
            f"baseline-{trial['label']}" if trial.get("kind") == "baseline" else None
        ) or f"trial-{trial['number']}"
        tags = {
            "autopeft.study_id": str(self.study["id"]),
            "autopeft.study": str(self.study["name"])[:5000],
            "autopeft.trial_id": str(tid),
            "autopeft.trial_number": str(trial["number"]),
            "autopeft.kind": str(trial.get("kind") or "search"),
        }
        if trial.get("label"):
            tags["autopeft.label"] = str(trial["label"])
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        self.runs[tid] = run_id
        self._params(run_id, trial)
        return run_id

    def _params(self, run_id: str, trial: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = {str(k): v for k, v in (trial.get("config") or {}).items()}
        params.update({f"budget.{k}": v for k, v in (trial.get("budget") or {}).items()})
        items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + _PARAMS_PER_BATCH])

    def _metrics(self, run_id: str, values: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for key, value in sorted((values or {}).items()):
            number = _number(value)
            if number is not None and math.isfinite(number):
                items.append(Metric(str(key)[:250], number, now, int(step)))
        for i in range(0, len(items), _METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + _METRICS_PER_BATCH])

    # -- events -------------------------------------------------------------------------------
    def report(self, trial: dict[str, Any], step: int, values: dict[str, Any]) -> None:
        if trial["id"] in self.ended:
            return
        run_id = self._run_of(trial)
        self._metrics(run_id, values, step)
        self.last_step[trial["id"]] = max(self.last_step.get(trial["id"], 0), int(step))

    def end(self, trial: dict[str, Any], artifacts: dict[str, Path]) -> list[str]:
        """Terminate the trial's run (final values, state, artifacts); returns what was left out."""
        tid = trial["id"]
        if tid in self.ended or trial["state"] not in _STATUS:
            return []
        run_id = self._run_of(trial)
        step = self.last_step.get(tid, trial.get("last_step") or 0)
        self._metrics(run_id, trial.get("final") or {}, step)
        self._metrics(run_id, trial.get("test_values") or {}, step)
        self.client.set_tag(run_id, "autopeft.state", trial["state"])
        if trial.get("error"):
            self.client.set_tag(run_id, "autopeft.error", str(trial["error"])[:5000])
        if trial.get("final_config"):
            self.client.set_tag(
                run_id, "autopeft.final_config", json.dumps(trial["final_config"])[:5000]
            )
        skipped = self._artifacts(run_id, artifacts)
        self.client.set_terminated(run_id, _STATUS[trial["state"]])
        self.ended.add(tid)
        return skipped

    def tested(self, trial: dict[str, Any], test_values: dict[str, Any]) -> None:
        run_id = self._run_of(trial)
        self._metrics(run_id, test_values, self.last_step.get(trial["id"], 0))

    def _artifacts(self, run_id: str, artifacts: dict[str, Path]) -> list[str]:
        if not artifacts:
            return []
        where = self.client.get_run(run_id).info.artifact_uri
        if not self.rules.artifacts_allowed(where, self.uri):
            return [
                f"artifacts not logged: the run's artifact location ({where.split(':', 1)[0]}:) is "
                "neither the server's tracking folders nor the tracking server itself"
            ]
        for name, folder in artifacts.items():
            self.client.log_artifacts(run_id, str(folder), name)
        return []

    def close(self) -> None:
        pass
