"""Locust users of ``benchmarks/load.py`` (run by it: ``locust -f benchmarks/load_locust.py ...``).

``ServiceUser`` is a dashboard or client user of the real controller: it polls a study and its
trials, reads fronts, lists studies and datasets, asks who it is, and now and then creates and
revokes a token, uploads and deletes a small dataset, or creates and deletes a study. A 503 is
honoured as a well-behaved client does: it waits the ``Retry-After`` seconds. ``BareUser`` asks a
bare FastAPI endpoint, the same way, for the side-by-side figure.

Every answer is tallied by this process (status, latency and when it came, connection error) and
written as JSON to ``$AUTOPEFT_LOAD_OUT`` when Locust quits; ``$AUTOPEFT_LOAD_CONTEXT`` names the JSON file with the
tokens and study ids (written by ``load.py``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from locust import FastHttpUser, between, constant, events, task

CONTEXT = json.loads(Path(os.environ["AUTOPEFT_LOAD_CONTEXT"]).read_text())
POLLS = {"study", "trials", "pareto", "studies", "bare"}
STUDY = {
    "name": "load",
    "space": {"params": {"x": {"type": "float", "low": 0.0, "high": 1.0}}},
    "objectives": [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "cost", "direction": "minimize"},
    ],
    "optimizer": {"name": "random"},
    "workload": {"kind": "python", "entrypoint": "api_throughput:one_second_trial"},
    "max_trials": 1,
    "max_parallel": 1,
}
CSV = b"text,label\n" + b"".join(b"row %d,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(40))


class Tally:
    def __init__(self):
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.errors: Counter = Counter()
        self.poll_ms: list[float] = []
        self.all_ms: list[float] = []
        self.first = self.last = None
        self.retry_after_missing = 0

    def add(self, name: str, response, response_time: float, exception) -> None:
        now = time.time()
        self.first = self.first or now
        self.last = now
        code = getattr(response, "status_code", 0) or 0
        if exception is not None and code == 0:
            self.errors[type(exception).__name__] += 1
            self.status[name]["error"] += 1
            return
        self.status[name][str(code)] += 1
        self.all_ms.append((now, response_time))
        if 200 <= code < 300 and name in POLLS:
            self.poll_ms.append((now, response_time))
        if code == 503 and not (response.headers or {}).get("retry-after"):
            self.retry_after_missing += 1


TALLY = Tally()


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, response, exception, **kw):
    TALLY.add(name, response, response_time, exception)


@events.quitting.add_listener
def _on_quit(environment, **kw):
    out = {
        "status": {k: dict(v) for k, v in TALLY.status.items()},
        "errors": dict(TALLY.errors),
        "poll_ms": TALLY.poll_ms,
        "all_ms": TALLY.all_ms,
        "span_s": (TALLY.last - TALLY.first) if TALLY.first else 0.0,
        "retry_after_missing": TALLY.retry_after_missing,
    }
    Path(os.environ["AUTOPEFT_LOAD_OUT"]).write_text(json.dumps(out))


class _Polite(FastHttpUser):
    abstract = True
    wait_time = constant(0)  # closed loop: the next request as soon as the last is answered
    network_timeout = 60.0
    connection_timeout = 60.0

    def call(self, method: str, path: str, name: str, **kw):
        with self.client.request(method, path, name=name, catch_response=True, **kw) as r:
            if r.status_code == 503:
                r.success()  # refused on purpose: wait as told
                wait = float(r.headers.get("retry-after") or 1)
                time.sleep(wait)
            elif r.status_code and r.status_code < 500:
                r.success()
            return r


class BareUser(_Polite):
    @task
    def bare(self):
        self.call("GET", "/bare", "bare")


class ServiceUser(_Polite):
    def on_start(self):
        me = CONTEXT["users"][id(self) % len(CONTEXT["users"])]
        self.auth = {"Authorization": f"Bearer {me['token']}"}
        self.study = me["study"]
        self.after = me["after"]

    def get(self, path: str, name: str):
        return self.call("GET", path, name, headers=self.auth)

    @task(30)
    def study(self):
        self.get(f"/api/v1/studies/{self.study}", "study")

    @task(30)
    def trials(self):
        self.get(f"/api/v1/studies/{self.study}/trials?after={self.after}", "trials")

    @task(10)
    def pareto(self):
        self.get(f"/api/v1/studies/{self.study}/pareto", "pareto")

    @task(10)
    def studies(self):
        self.get("/api/v1/studies", "studies")

    @task(4)
    def datasets(self):
        self.get("/api/v1/datasets", "datasets")

    @task(4)
    def me(self):
        self.get("/api/v1/me", "me")

    @task(4)
    def tokens(self):
        self.get("/api/v1/tokens", "tokens")

    @task(1)
    def token_churn(self):
        r = self.call(
            "POST",
            "/api/v1/tokens",
            "token_create",
            headers=self.auth,
            json={"name": "load", "expires_in_days": 1},
        )
        if r.status_code == 201:
            self.call(
                "DELETE", f"/api/v1/tokens/{r.json()['id']}", "token_revoke", headers=self.auth
            )

    @task(1)
    def upload_churn(self):
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="load.csv"\r\n'
                "Content-Type: text/csv\r\n\r\n"
            ).encode()
            + CSV
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {**self.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        r = self.call("POST", "/api/v1/datasets", "upload", headers=headers, data=body)
        if r.status_code == 201:
            self.call(
                "DELETE", f"/api/v1/datasets/{r.json()['id']}", "dataset_delete", headers=self.auth
            )

    @task(1)
    def study_churn(self):
        r = self.call("POST", "/api/v1/studies", "create", headers=self.auth, json=STUDY)
        if r.status_code == 201:
            self.call("DELETE", f"/api/v1/studies/{r.json()['id']}", "delete", headers=self.auth)


class PollUser(_Polite):
    """Only the polls of a study page (study, trials, front): a dashboard's steady state."""

    on_start = ServiceUser.on_start
    get = ServiceUser.get
    tasks = {ServiceUser.study: 30, ServiceUser.trials: 30, ServiceUser.pareto: 10}


class SoakUser(_Polite):
    """``soak.py``'s pollers: the studies named in the context file (re-read every 10 s, as the
    soak starts new ones), their trials and fronts, and the list of studies, about every second
    (a dashboard)."""

    wait_time = between(0.5, 1.5)

    def on_start(self):
        self.read_at = 0.0
        self.refresh()

    def refresh(self):
        if time.time() - self.read_at > 10:
            me = json.loads(Path(os.environ["AUTOPEFT_LOAD_CONTEXT"]).read_text())["users"][0]
            self.auth = {"Authorization": f"Bearer {me['token']}"}
            self.studies = me["studies"]
            self.read_at = time.time()
        return self.studies[int(time.time() * 1000) % len(self.studies)]

    @task(3)
    def study(self):
        self.call("GET", f"/api/v1/studies/{self.refresh()}", "study", headers=self.auth)

    @task(3)
    def trials(self):
        self.call("GET", f"/api/v1/studies/{self.refresh()}/trials", "trials", headers=self.auth)

    @task(1)
    def pareto(self):
        self.call("GET", f"/api/v1/studies/{self.refresh()}/pareto", "pareto", headers=self.auth)

    @task(1)
    def studies_list(self):
        self.call("GET", "/api/v1/studies", "studies", headers=self.auth)
