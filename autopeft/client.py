"""Python client of the autopeft controller (REST, via httpx).

    import autopeft
    client = autopeft.Client("http://127.0.0.1:8642", token)
    study = client.create_study(name="demo", space="lora_per_layer", objectives=[...],
                                optimizer={"name": "mobo"}, workload={...}, max_trials=20)
    study.wait()                 # progress bar on stderr
    study.pareto(); study.hypervolume(); study.to_dataframe()
    study.export(trial_id, "adapter/")
    study.extend(max_trials=10)  # more budget, also for a finished study
    study.clone({"workload": {"epochs": 3}})          # a new study with changes
    client.cancel_trial(trial_id)                     # one trial ends failed; the study goes on
    study.webhook()              # spec.webhook: where it posts, its recent deliveries
    verify_signature(secret, raw_body, headers["X-Autopeft-Signature"])  # in your receiver

    ds = client.upload_dataset("reviews.csv")          # your own data, from any machine
    client.create_study(..., workload={"kind": "peft", "model": "...", "dataset_id": ds["id"]})

Server errors raise :class:`ApiError` carrying the envelope's ``code``, ``message``, ``field``.
Only httpx is imported here; pandas is imported by ``to_dataframe`` and tqdm by ``wait``.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8642"
FINISHED_STATES = ("finished", "stopped", "failed")


class ApiError(RuntimeError):
    """An error answered by the controller (``status`` plus the envelope's fields)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field


class Client:
    """Talks to one controller as one user (the owner of ``token``)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.url = (url or os.environ.get("AUTOPEFT_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("AUTOPEFT_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, trust_env=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self._http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise ApiError(
                    resp.status_code,
                    err.get("code", "error"),
                    err.get("message", ""),
                    err.get("field"),
                )
            except (ValueError, KeyError, TypeError):
                raise ApiError(resp.status_code, "error", resp.text[:500]) from None
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- API ------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def create_study(
        self,
        name: str | None = None,
        space: str | dict | None = None,
        objectives: list | None = None,
        optimizer: str | dict | None = None,
        workload: dict | None = None,
        spec: dict | None = None,
        **fields: Any,
    ) -> Study:
        """Submit a study. Give its fields as keywords, or a whole ``spec`` mapping.

        ``objectives`` may be ``[("accuracy", "maximize"), ...]`` or the REST form
        ``[{"name": ..., "direction": ...}]``; ``optimizer`` may be a name or ``{"name", "options"}``.
        """
        body = _study_body(spec, name, space, objectives, optimizer, workload, fields)
        return Study(self, self._json("POST", "/api/v1/studies", json=body))

    def plan_study(
        self,
        name: str | None = None,
        space: str | dict | None = None,
        objectives: list | None = None,
        optimizer: str | dict | None = None,
        workload: dict | None = None,
        spec: dict | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """What a study would cost before it runs (``POST /studies/plan``: compute per trial,
        full trials the budget buys, the optimiser's initial design, predicted memory, measured
        time, warnings). Takes what :meth:`create_study` takes; stores and starts nothing."""
        body = _study_body(spec, name, space, objectives, optimizer, workload, fields)
        return self._json("POST", "/api/v1/studies/plan", json=body)

    def study(self, study_id: int) -> Study:
        return Study(self, self._json("GET", f"/api/v1/studies/{int(study_id)}"))

    def studies(self, q: str | None = None, tags: list[str] | None = None) -> list[Study]:
        """Your studies; ``q``: text in the name, notes or a tag; ``tags``: only studies with
        every one of them."""
        params: dict[str, Any] = {}
        if q:
            params["q"] = q
        if tags:
            params["tag"] = list(tags)
        return [
            Study(self, s) for s in self._json("GET", "/api/v1/studies", params=params)["studies"]
        ]

    def compare(self, study_ids: list[int]) -> dict[str, Any]:
        """Studies with the same objectives side by side: per study its validation ``front``, its
        ``history`` of hypervolume after each complete trial against ``compute`` (training epochs
        used so far), one ``reference_point`` for all (see ``GET /studies/compare``)."""
        return self._json(
            "GET", "/api/v1/studies/compare", params={"ids": [int(i) for i in study_ids]}
        )

    # -- datasets -------------------------------------------------------------------------------
    def upload_dataset(
        self,
        path: str | Path,
        name: str | None = None,
        text_column: str | list[str] | None = None,
        label_column: str | None = None,
        format: str | None = None,
        encoding: str | None = None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """Upload a CSV / TSV / JSONL file (streamed from disk) and return the stored dataset:
        ``id`` (use it as ``workload["dataset_id"]``), ``rows``, ``labels`` (rows per label), ``kind``,
        ``sha256``... ``kind="sft"``: JSONL of ``{"prompt", "completion"}`` or ``{"messages": [{"role",
        "content"}, ...]}`` records for a ``causal_lm`` study (detected when not given: the first
        record decides). The server checks it first; a bad file raises :class:`ApiError` naming the
        row and column (``.field``: the column, or the record's field such as ``messages.2.role``)."""
        path = Path(path)
        fields = {
            "name": name,
            "label_column": label_column,
            "format": format,
            "encoding": encoding,
            "kind": kind,
            "text_column": ",".join(text_column)
            if isinstance(text_column, (list, tuple))
            else text_column,
        }
        data = {k: v for k, v in fields.items() if v is not None}
        with open(path, "rb") as fh:
            return self._json(
                "POST",
                "/api/v1/datasets",
                data=data,
                files={"file": (path.name, fh, "application/octet-stream")},
                timeout=None,
            )

    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/api/v1/datasets")["datasets"]

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/datasets/{int(dataset_id)}")

    def delete_dataset(self, dataset_id: int) -> None:
        self.request("DELETE", f"/api/v1/datasets/{int(dataset_id)}")

    # -- tokens and account -----------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """Your name, role, whether you may run python workloads, your limits and usage."""
        return self._json("GET", "/api/v1/me")

    def tokens(self) -> list[dict[str, Any]]:
        return self._json("GET", "/api/v1/tokens")["tokens"]

    def create_token(self, expires_in_days: float = 90, name: str | None = None) -> dict[str, Any]:
        """A new token of yours; ``["token"]`` is the token itself, shown this once."""
        body: dict[str, Any] = {"expires_in_days": expires_in_days}
        if name is not None:
            body["name"] = name
        return self._json("POST", "/api/v1/tokens", json=body)

    def revoke_token(self, token_id: int) -> None:
        self.request("DELETE", f"/api/v1/tokens/{int(token_id)}")

    def trial(self, trial_id: int) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/trials/{int(trial_id)}")

    def annotate_trial(self, trial_id: int, **fields: Any) -> dict[str, Any]:
        """Set a trial's ``notes`` and / or ``tags`` (those given replace the stored ones)."""
        return self._json("PATCH", f"/api/v1/trials/{int(trial_id)}", json=_annotations(fields))

    def cancel_trial(self, trial_id: int) -> dict[str, Any]:
        """End one of your queued or running trials as ``failed`` ("cancelled by <you>"; a running
        trial's worker is stopped); the study goes on. Returns the trial (``failed`` once it ended)."""
        return self._json("POST", f"/api/v1/trials/{int(trial_id)}/cancel")

    def reports(self, trial_id: int) -> list[dict[str, Any]]:
        return self._json("GET", f"/api/v1/trials/{int(trial_id)}/reports")["reports"]


def verify_signature(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (the ``X-Autopeft-Signature`` header of a webhook delivery) is the
    HMAC-SHA256 of the raw request ``body`` with the study's webhook ``secret``; compare the bytes
    as received, before parsing them."""
    import hashlib
    import hmac

    if not signature or not signature.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature[len("sha256=") :])


def _study_body(spec, name, space, objectives, optimizer, workload, fields) -> dict[str, Any]:
    body = dict(spec or {})
    for key, value in (
        ("name", name),
        ("space", space),
        ("objectives", objectives),
        ("optimizer", optimizer),
        ("workload", workload),
    ):
        if value is not None:
            body[key] = value
    body.update(fields)
    if isinstance(body.get("optimizer"), str):
        body["optimizer"] = {"name": body["optimizer"], "options": {}}
    if body.get("objectives"):
        body["objectives"] = [
            o if isinstance(o, dict) else {"name": o[0], "direction": o[1]}
            for o in body["objectives"]
        ]
    return body


def _annotations(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - {"notes", "tags"}
    if unknown:
        raise TypeError(f"only notes and tags can be set, not {', '.join(sorted(unknown))}")
    return {k: list(v) if k == "tags" and v is not None else v for k, v in fields.items()}


def progress_line(study_id: int, state: str, counts: dict[str, int]) -> str:
    """One line of a study's progress, as :meth:`Study.wait` logs it without a terminal."""
    done = sum(counts.get(k, 0) for k in ("complete", "pruned", "failed"))
    return (
        f"study {study_id} {state}: {done} trials done (complete {counts.get('complete', 0)}, "
        f"pruned {counts.get('pruned', 0)}, failed {counts.get('failed', 0)}), "
        f"{counts.get('running', 0)} running"
    )


def budget_progress(
    spec: dict[str, Any], done: int, epochs: float, seconds: float
) -> tuple[str, float, float]:
    """``(unit, used, total)`` of the budget nearest its end: training epochs of ``max_epochs``,
    seconds of ``max_seconds`` or trials of ``max_trials``, whichever has the largest share used
    (a study ends at the first budget it reaches). Where a time or epoch budget is set, the trials
    count only once they are nearer their end than it."""
    budgets = [("trial", float(done), float(spec.get("max_trials") or 0))]
    if spec.get("max_epochs"):
        budgets.append(("epoch", float(epochs), float(spec["max_epochs"])))
    if spec.get("max_seconds"):
        budgets.append(("s", float(seconds), float(spec["max_seconds"])))
    budgets = [b for b in budgets if b[2] > 0]
    if not budgets:
        return "trial", float(done), 0.0
    # on a tie the time or epoch budget (listed later) is the one shown
    return max(reversed(budgets), key=lambda b: b[1] / b[2])


def _budget_text(unit: str, used: float, total: float) -> str:
    if unit == "s":
        return f"{used / 60:.1f} of {total / 60:.1f} min"
    return f"{used:.3g} of {total:g} {unit}s"


def _trial_values(trial: dict[str, Any], objectives: list[dict[str, Any]]) -> str:
    values = trial.get("values") or {}
    shown = []
    for o in objectives:
        v = values.get(o["name"])
        if isinstance(v, (int, float)):
            text = f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1000 else f"{v:.4g}"
            shown.append(f"{o['name']} {text}")
    return ", ".join(shown)


def trial_line(
    study_id: int,
    trial: dict[str, Any],
    objectives: list[dict[str, Any]],
    counts: dict[str, int],
    budget: tuple[str, float, float] | None = None,
) -> str:
    """One line for one finished trial, as :meth:`Study.wait` logs it without a terminal: its
    state and objectives (or its error), the trials done and running, and the budget used."""
    label = f"trial #{trial['number']}" + (f" ({trial['label']})" if trial.get("label") else "")
    state = trial["state"]
    if state == "complete":
        what = f"complete: {_trial_values(trial, objectives)}"
    else:
        error = (trial.get("error") or "").strip().splitlines()
        what = state + (f": {error[-1][:120]}" if error else "")
    done = sum(counts.get(k, 0) for k in ("complete", "pruned", "failed"))
    tail = f"{done} done, {counts.get('running', 0)} running"
    if budget is not None and budget[2] > 0:
        tail += f"; budget {_budget_text(*budget)}"
    return f"study {study_id} {label} {what} ({tail})"


def _since(iso: str | None) -> float:
    """Seconds from an API datetime (naive UTC) to now; 0 when unknown."""
    import datetime as dt

    if not iso:
        return 0.0
    try:
        t = dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (dt.datetime.now(dt.timezone.utc) - t).total_seconds())


class Study:
    """A handle on one study; ``refresh()`` re-reads it, the other methods query live data."""

    def __init__(self, client: Client, data: dict[str, Any]):
        self._client, self._data = client, data

    def __repr__(self) -> str:
        return (
            f"Study(id={self.id}, name={self.name!r}, state={self.state!r}, counts={self.counts})"
        )

    @property
    def id(self) -> int:
        return int(self._data["id"])

    @property
    def name(self) -> str:
        return self._data["name"]

    @property
    def state(self) -> str:
        return self._data["state"]

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._data["counts"])

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self._data["spec"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self._data)

    @property
    def notes(self) -> str | None:
        return self._data.get("notes")

    @property
    def tags(self) -> list[str]:
        return list(self._data.get("tags") or [])

    def annotate(self, **fields: Any) -> Study:
        """Set the study's ``notes`` and / or ``tags`` (those given replace the stored ones:
        ``notes=None`` clears the notes, ``tags=[]`` the tags)."""
        self._data = self._client._json(
            "PATCH", f"/api/v1/studies/{self.id}", json=_annotations(fields)
        )
        return self

    def refresh(self) -> Study:
        self._data = self._client._json("GET", f"/api/v1/studies/{self.id}")
        return self

    def stop(self) -> Study:
        self._data = self._client._json("POST", f"/api/v1/studies/{self.id}/stop")
        return self

    def resume(self) -> Study:
        self._data = self._client._json("POST", f"/api/v1/studies/{self.id}/resume")
        return self

    def delete(self) -> None:
        self._client.request("DELETE", f"/api/v1/studies/{self.id}")

    def extend(self, max_trials: int = 0, max_seconds: float = 0, max_epochs: float = 0) -> Study:
        """Add budget: trials, seconds (time budget) and / or training epochs (compute budget). A
        finished study runs again, exactly the added budget; a running one goes on with it."""
        body = {
            k: v
            for k, v in (
                ("max_trials", max_trials),
                ("max_seconds", max_seconds),
                ("max_epochs", max_epochs),
            )
            if v
        }
        self._data = self._client._json("POST", f"/api/v1/studies/{self.id}/extend", json=body)
        return self

    def enqueue(self, configs: list[dict[str, Any]]) -> dict[str, Any]:
        """Configs to try next, before the optimiser's own suggestions (trained and told like any
        trial, ``label == "enqueued"``, counted in ``max_trials``, which is raised when they do not
        fit). A finished study runs again for them. Returns ``{"study", "configs" (normalised),
        "waiting", "max_trials_added"}``; a bad config raises :class:`ApiError` naming
        ``configs.<i>.<key>``."""
        out = self._client._json(
            "POST", f"/api/v1/studies/{self.id}/enqueue", json={"configs": list(configs)}
        )
        self._data = out["study"]
        return out

    def attach(
        self,
        config: dict[str, Any],
        values: dict[str, float],
        test_values: dict[str, float] | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """A result measured elsewhere, told to the optimiser: returns the new trial (``kind ==
        "attached"``; never trained here, so it cannot be exported). ``values`` covers every
        objective (an exactly computed one such as ``trainable_params`` may be left out);
        ``test_values`` are your held-out test metrics (``test_source == "user"``); without them
        the trial is never on the test-split front. A result the study's runner has not made a
        trial yet (after 20 s) comes back as ``{"pending": True, ...}``."""
        body: dict[str, Any] = {"config": config, "values": values}
        if test_values is not None:
            body["test_values"] = test_values
        if label is not None:
            body["label"] = label
        return self._client._json("POST", f"/api/v1/studies/{self.id}/attach", json=body)

    def clone(self, overrides: dict[str, Any] | None = None, **fields: Any) -> Study:
        """A new study from this one's spec with ``overrides`` (and keyword fields) merged over it
        (mappings merge key by key, None removes a key), validated like a new study."""
        body = {**(overrides or {}), **fields}
        return Study(
            self._client, self._client._json("POST", f"/api/v1/studies/{self.id}/clone", json=body)
        )

    def trials(self, after: int | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """All trials (or those created after trial id ``after``), following pages."""
        out: list[dict[str, Any]] = []
        cursor = after
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor is not None:
                params["after"] = cursor
            if state:
                params["state"] = state
            page = self._client._json("GET", f"/api/v1/studies/{self.id}/trials", params=params)
            out.extend(page["trials"])
            if len(page["trials"]) < 1000:
                return out
            cursor = page["next_after"]

    def pareto(self, split: str = "validation") -> list[dict[str, Any]]:
        """The front selected on validation among feasible trials (baselines included, ``kind ==
        "baseline"``; trials violating a constraint never, see :meth:`infeasible`); with
        ``split="test"`` each trial's ``values`` are its held-out test metrics (None until tested)."""
        return self._client._json(
            "GET", f"/api/v1/studies/{self.id}/pareto", params={"split": split}
        )["trials"]

    def webhook(self, limit: int = 50) -> dict[str, Any]:
        """The study's webhook: ``{"url", "events", "signed", "refused", "deliveries"}``, the
        newest ``limit`` deliveries first, each with its ``state`` (pending / delivered / failed),
        ``attempts``, last ``status_code`` or ``error`` and the ``payload`` posted. The secret is
        never returned. ``ApiError`` 404 when the study has none."""
        return self._client._json(
            "GET", f"/api/v1/studies/{self.id}/webhook", params={"limit": limit}
        )

    def set_webhook(
        self, url: str, secret: str | None = None, events: list[str] | None = None
    ) -> dict[str, Any]:
        """Give the study a webhook or replace its one (``PUT``; the secret is never shown, so give
        it again to keep deliveries signed); ``events``: of finished, failed, front (default
        all). Returns :meth:`webhook`'s view."""
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = list(events)
        return self._client._json("PUT", f"/api/v1/studies/{self.id}/webhook", json=body)

    def delete_webhook(self) -> None:
        """Remove the study's webhook (nothing more is posted)."""
        self._client.request("DELETE", f"/api/v1/studies/{self.id}/webhook")

    def ping_webhook(self) -> dict[str, Any]:
        """Queue a signed ``ping`` delivery to the study's webhook (to check the receiver); returns
        the delivery (follow it with :meth:`webhook`)."""
        return self._client._json("POST", f"/api/v1/studies/{self.id}/webhook/ping")

    def infeasible(self) -> list[dict[str, Any]]:
        """Complete trials that violate a constraint of the study (``infeasible_reason`` says
        which): never on :meth:`pareto` nor in :meth:`hypervolume`."""
        return [t for t in self.trials(state="complete") if t.get("feasible") is False]

    def importance(self, evaluator: str = "fanova") -> dict[str, Any]:
        """Which searched parameters matter, per objective: ``{"evaluator", "n_trials",
        "objectives": {name: {param: importance} | None}, "excluded", "reason"}`` (Optuna's
        fANOVA by default; ``"ped_anova"`` or ``"mdi"``)."""
        return self._client._json(
            "GET", f"/api/v1/studies/{self.id}/importance", params={"evaluator": evaluator}
        )

    def hypervolume(self, split: str = "validation") -> float:
        return float(
            self._client._json(
                "GET", f"/api/v1/studies/{self.id}/hypervolume", params={"split": split}
            )["hypervolume"]
        )

    def wait(self, timeout: float | None = None, poll: float = 1.0, progress: bool = True) -> Study:
        """Block until the study is finished, stopped or failed, showing progress on stderr.

        In a terminal, a bar whose end is the study's budget: the training epochs of
        ``max_epochs`` or the seconds of ``max_seconds`` (whichever is nearer its end, see
        :func:`budget_progress`), ``max_trials`` only where no time or epoch budget is set or
        the trials are nearer theirs. Without a terminal (a log, CI, ``make demo`` piped): one
        line per finished trial (:func:`trial_line`), and one when the study's state changes
        (:func:`progress_line`); never a redrawn bar."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        tty = progress and sys.stderr.isatty()
        if tty:
            from tqdm import tqdm

            bar = tqdm(
                total=None, desc=f"study {self.id}", file=sys.stderr, dynamic_ncols=True, leave=True
            )
        started, last_state = time.monotonic(), None
        trials: dict[int, dict[str, Any]] = {}
        reported: set[int] = set()
        first = True
        try:
            while True:
                self.refresh()
                c = self.counts
                done = c.get("complete", 0) + c.get("failed", 0) + c.get("pruned", 0)
                finished_now: list[dict[str, Any]] = []
                if progress:
                    for t in self.trials(after=self._progress_cursor(trials)):
                        trials[t["id"]] = t
                    ended = [
                        t
                        for t in trials.values()
                        if t["state"] in ("complete", "failed", "pruned")
                        and t["id"] not in reported
                    ]
                    reported.update(t["id"] for t in ended)
                    if not first:  # trials that ended before the wait began are not news
                        finished_now = sorted(
                            ended, key=lambda t: (t.get("finished_at") or "", t["id"])
                        )
                    first = False
                spec = self.spec
                epochs = sum(float(t.get("epochs_trained") or 0.0) for t in trials.values())
                seconds = _since(self._data.get("started_at")) - (
                    _since(self._data.get("finished_at")) if self._data.get("finished_at") else 0.0
                )
                budget = budget_progress(spec, done, epochs, seconds)
                if bar is not None:
                    unit, used, total = budget
                    used = min(used, total) if total else used
                    whole = unit == "trial"  # trials count whole; epochs and seconds to a tenth
                    bar.unit = unit
                    bar.total = (int(total) if whole else total) or None
                    bar.n = int(used) if whole else round(used, 1)
                    bar.set_postfix(
                        done=done,
                        running=c.get("running", 0),
                        failed=c.get("failed", 0),
                        pruned=c.get("pruned", 0),
                        refresh=False,
                    )
                    bar.refresh()
                elif progress:
                    stamp = f"[{(time.monotonic() - started) / 60:5.1f} min]"
                    objectives = spec.get("objectives") or []
                    for t in finished_now:
                        line = trial_line(self.id, t, objectives, c, budget)
                        print(f"{stamp} {line}", file=sys.stderr, flush=True)
                    if self.state != last_state:
                        line = progress_line(self.id, self.state, c)
                        print(f"{stamp} {line}", file=sys.stderr, flush=True)
                        last_state = self.state
                if self.state in FINISHED_STATES:
                    return self
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"study {self.id} still {self.state} after {timeout} s ({c})"
                    )
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()

    @staticmethod
    def _progress_cursor(trials: dict[int, dict[str, Any]]) -> int | None:
        """Read trials from the first unfinished one on (ids are in creation order): new trials
        and the unfinished ones' changes arrive, the finished are not read again."""
        if not trials:
            return None
        open_ids = [
            i for i, t in trials.items() if t["state"] not in ("complete", "failed", "pruned")
        ]
        return (min(open_ids) - 1) if open_ids else max(trials)

    def to_dataframe(self):
        """One row per trial: number, state, values.<name>, config.<key>, timestamps (pandas)."""
        import pandas as pd

        rows = []
        for t in self.trials():
            row = {
                k: t.get(k)
                for k in (
                    "id",
                    "number",
                    "state",
                    "kind",
                    "label",
                    "attempts",
                    "parent_id",
                    "epochs_trained",
                    "feasible",
                    "infeasible_reason",
                    "created_at",
                    "started_at",
                    "finished_at",
                )
            }
            row.update({f"values.{k}": v for k, v in (t.get("values") or {}).items()})
            row.update({f"test.{k}": v for k, v in (t.get("test_values") or {}).items()})
            row.update({f"config.{k}": v for k, v in (t.get("config") or {}).items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def export_front(self, path: str | Path) -> Path:
        """Write the validation front (feasible search trials; baselines left out) as JSON: the
        study's objectives and, per trial, its number, config, values and test values. Another
        study starts from it with :func:`front_configs` (``autopeft study create --warm-start-from``)."""
        front = [t for t in self.pareto() if t.get("kind", "search") == "search"]
        doc = {
            "format": FRONT_FORMAT,
            "study": self.id,
            "name": self.name,
            "objectives": self.spec["objectives"],
            "trials": [
                {k: t.get(k) for k in ("number", "config", "values", "test_values")} for t in front
            ],
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
        return target

    def export(self, trial_id: int, directory: str | Path, merged: bool = False) -> Path:
        """Download trial ``trial_id``'s adapter (zip) and unpack it into ``directory``; with
        ``merged``, the base model with the adapter merged into its weights (a plain transformers
        folder). Each folder has a model card (``README.md``)."""
        what = "merged" if merged else "adapter"
        resp = self._client.request("GET", f"/api/v1/trials/{int(trial_id)}/{what}")
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
            for member in zf.namelist():
                dest = (target / member).resolve()
                if not str(dest).startswith(str(target.resolve())):
                    raise ApiError(500, "bad_archive", f"unsafe path in archive: {member}")
            zf.extractall(target)
        return target


FRONT_FORMAT = "autopeft-front/1"


def front_configs(path: str | Path, top: int | None = None) -> list[dict[str, Any]]:
    """The configs of a front written by :meth:`Study.export_front`, best first by its first
    objective (ties by trial number), at most ``top``. They are meant for
    ``optimizer.options.warm_start`` (a list of configs: mapped onto the new study's space, across
    depths too, and trained first). A file that is not such a front raises ``InvalidConfig``
    naming ``warm_start.file``."""
    from autopeft.errors import InvalidConfig

    field = "warm_start.file"
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InvalidConfig(f"{path}: not a readable JSON front ({err})", field) from err
    if not isinstance(doc, dict) or doc.get("format") != FRONT_FORMAT:
        raise InvalidConfig(
            f"{path}: not an exported front (format {FRONT_FORMAT!r}; write one with "
            "`autopeft study export ID --front FILE`)",
            field,
        )
    objectives, trials = doc.get("objectives"), doc.get("trials")
    if not isinstance(objectives, list) or not objectives or not isinstance(trials, list):
        raise InvalidConfig(f"{path}: the front needs 'objectives' and 'trials' lists", field)
    first = objectives[0]
    name, sign = first.get("name"), -1.0 if first.get("direction") == "maximize" else 1.0
    for i, t in enumerate(trials):
        if not isinstance(t, dict) or not isinstance(t.get("config"), dict):
            raise InvalidConfig(f"{path}: trials[{i}] has no config mapping", f"{field}.trials.{i}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise InvalidConfig(f"top must be a positive integer, got {top!r}", "warm_start.top")

    def key(t: dict) -> tuple[float, int]:
        value = (t.get("values") or {}).get(name)
        return (sign * float(value) if value is not None else float("inf"), t.get("number", 0))

    ordered = sorted(trials, key=key)
    return [dict(t["config"]) for t in ordered[:top]]
