"""Controller capacity (issue 18): how many trial completions and reports per second one controller
sustains, i.e. how large a cluster it can feed, beside Optuna's RDB storage on the same databases.

**Ours.** The real controller (``create_app``: REST, scheduler, store) served by uvicorn in this
process, with one boundary faked: the executor. ``InstantExecutor`` runs no code; each submitted
trial "runs" for ``--trial-seconds`` and sends ``--reports`` reports evenly spaced in that time,
then completes. Its callbacks (the scheduler's ``on_report`` / ``on_done``, which write the store and
ask the optimiser) run on a pool of ``--callback-threads`` threads, one event of a trial at a time,
the next only after the previous returned, as a worker would. Studies are created through REST
(``random`` optimiser: the bookkeeping, not the optimiser, is measured); ``S`` studies with
``max_parallel`` = R / S keep ``R`` trials running. The demand is R / trial-seconds completions/s;
when the controller cannot keep up, events wait (their *lag*: handled minus due time) and the
achieved rate is its capacity. Measured over ``--seconds`` after a warm-up: completions/s,
reports/s, trials running (mean), report lag p50 / p99, and the *refill delay* (one trial's
``on_done`` returned to the next ``submit`` of the same study: the optimiser's ask, the queued
trial's rows and the slot hand-off — the queueing delay a worker sees).

**Optuna.** ``optuna.storages.RDBStorage`` on a fresh database of the same kind, doing the same
bookkeeping per trial: ``study.ask()`` with two float parameters (RandomSampler), ``--reports``
intermediate values (``set_trial_intermediate_value``, what ``trial.report`` stores; it refuses
multi-objective studies) and ``study.tell`` with two objectives; ``S`` studies, ``R`` trials kept
RUNNING (the ones not being worked on wait as RUNNING rows), ``--optuna-threads`` client threads
doing the work as fast as the storage lets them.

    .venv/bin/python benchmarks/controller_capacity.py                 # SQLite and PostgreSQL
    .venv/bin/python benchmarks/controller_capacity.py --db sqlite --rows 1x1,1x10 --seconds 5

Prints a table and writes ``benchmarks/results/controller_capacity.json``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results" / "controller_capacity.json"
from tests.api.workloads import OBJECTIVES, SPACE  # noqa: E402  (the space of that workload)
from tests.api.workloads import _metrics as values_of  # noqa: E402


# ------------------------------------------------------------------------------ fake executor
def instant_executor_class():
    from autopeft.workers.base import Executor, TrialOutcome

    class InstantExecutor(Executor):
        name = "instant"

        def __init__(self, trial_seconds: float, reports: int, threads: int):
            self.trial_seconds, self.reports = trial_seconds, reports
            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="instant")
            self._lock = threading.Lock()
            self._cv = threading.Condition(self._lock)
            self._heap: list = []  # (due, seq, trial id)
            self._seq = 0
            self.runs: dict[int, dict] = {}
            self.closed = False
            self.counting = False
            self.reset()
            self._timer = threading.Thread(target=self._clock, daemon=True)
            self._timer.start()

        def reset(self) -> None:
            with self._lock:
                self.n_reports = self.n_done = 0
                self.lags: list[float] = []
                self.refill: list[float] = []
                self.running_samples: list[int] = []
                self.last_done: dict[int, list[float]] = {}

        @property
        def capacity(self):
            return None

        def submit(self, spec, on_report, on_done):
            if self.closed:
                raise RuntimeError("executor is shut down")
            now = time.perf_counter()
            with self._cv:
                waiting = self.last_done.get(spec.study_id)
                if waiting:
                    self.refill.append(now - waiting.pop(0))
                self.runs[spec.trial_id] = {
                    "spec": spec,
                    "on_report": on_report,
                    "on_done": on_done,
                    "start": now,
                    "k": 0,
                }
                self._push(spec.trial_id, now + self.trial_seconds / (self.reports + 1))

        def _push(self, trial_id: int, due: float) -> None:
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, trial_id))
            self._cv.notify()

        def _clock(self) -> None:
            while True:
                with self._cv:
                    while not self.closed and (
                        not self._heap or self._heap[0][0] > time.perf_counter()
                    ):
                        timeout = self._heap[0][0] - time.perf_counter() if self._heap else None
                        self._cv.wait(timeout)
                    if self.closed:
                        return
                    due, _, trial_id = heapq.heappop(self._heap)
                self.pool.submit(self._step, trial_id, due)

        def _step(self, trial_id: int, due: float) -> None:
            with self._lock:
                run = self.runs.get(trial_id)
            if run is None:  # cancelled
                return
            run["k"] += 1
            k = run["k"]
            values = values_of(run["spec"].config)
            if k <= self.reports:
                answer = run["on_report"](k, {**values, "epoch": k / self.reports})
                now = time.perf_counter()
                with self._cv:
                    if self.counting:
                        self.n_reports += 1
                        self.lags.append(now - due)
                    if answer == "continue" and trial_id in self.runs:
                        step = self.trial_seconds / (self.reports + 1)
                        self._push(trial_id, run["start"] + (k + 1) * step)
                        return
            with self._lock:
                run = self.runs.pop(trial_id, None)
            if run is None:
                return
            run["on_done"](TrialOutcome("complete", values=values))
            now = time.perf_counter()
            with self._lock:
                if self.counting:
                    self.n_done += 1
                self.last_done.setdefault(run["spec"].study_id, []).append(now)

        def cancel(self, trial_id):
            with self._lock:
                run = self.runs.pop(trial_id, None)
            if run is None:
                return False
            run["on_done"](TrialOutcome("failed", error="cancelled", cancelled=True))
            return True

        def running(self):
            with self._lock:
                return sorted(self.runs)

        def shutdown(self, wait=True):
            with self._cv:
                self.closed = True
                self._cv.notify_all()
            self.pool.shutdown(wait=False, cancel_futures=True)

    return InstantExecutor


# ------------------------------------------------------------------------------ ours
class Controller:
    """``create_app`` under uvicorn in a thread, with the instant executor."""

    def __init__(self, db_url: str, workdir: Path, executor):
        import uvicorn

        import autopeft.api.app as appmod
        from autopeft.api.settings import Settings

        self.executor = executor
        appmod._executor = lambda settings: executor  # the one faked boundary
        self.secret = "capacity-benchmark-secret-0123456789abcdef"
        settings = Settings(
            db_url=db_url,
            secret=self.secret,
            artifacts_dir=workdir / "artifacts",
            datasets_dir=workdir / "datasets",
            python_workloads="all",
            worker_pythonpath=str(ROOT),
            cpus_per_trial=0,
            max_active_studies_per_user=0,
            log_level="warning",
        )
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.app = appmod.create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the controller did not start")
            time.sleep(0.05)
        self.db_url = db_url
        self.token = self._token()
        import httpx

        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )

    def _token(self) -> str:
        from autopeft.api.db import Database
        from autopeft.api.security import create_token

        db = Database(self.db_url)
        try:
            with db.write() as s:
                return create_token(s, "bench", self.secret, role="admin")
        finally:
            db.dispose()

    def create_study(self, i: int, max_parallel: int, max_trials: int) -> int:
        r = self.http.post(
            "/studies",
            json={
                "name": f"capacity-{i}",
                "space": SPACE,
                "objectives": OBJECTIVES,
                "optimizer": {"name": "random", "options": {}},
                "workload": {"kind": "python", "entrypoint": "tests.api.workloads:quick"},
                "max_trials": max_trials,
                "max_parallel": max_parallel,
                "seed": i,
            },
        )
        r.raise_for_status()
        return r.json()["id"]

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(60)
        self.executor.shutdown()


def measure_ours(db_url, workdir, studies, running, args) -> dict:
    Executor = instant_executor_class()
    executor = Executor(args.trial_seconds, args.reports, args.callback_threads)
    ctl = Controller(db_url, workdir, executor)
    try:
        per = running // studies
        ids = [ctl.create_study(i, per, max_trials=100_000) for i in range(studies)]
        time.sleep(args.warmup)
        executor.reset()
        executor.counting = True
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            time.sleep(0.25)
            with executor._lock:
                executor.running_samples.append(len(executor.runs))
        elapsed = time.perf_counter() - t0
        executor.counting = False
        with executor._lock:
            lags = np.array(executor.lags or [np.nan])
            refill = np.array(executor.refill or [np.nan])
            row = {
                "completions_per_s": executor.n_done / elapsed,
                "reports_per_s": executor.n_reports / elapsed,
                "demand_completions_per_s": running / args.trial_seconds,
                "running_mean": float(np.mean(executor.running_samples)),
                "report_lag_p50_ms": 1e3 * float(np.nanpercentile(lags, 50)),
                "report_lag_p99_ms": 1e3 * float(np.nanpercentile(lags, 99)),
                "refill_p50_ms": 1e3 * float(np.nanpercentile(refill, 50)),
                "refill_p99_ms": 1e3 * float(np.nanpercentile(refill, 99)),
            }
        for sid in ids:
            ctl.http.post(f"/studies/{sid}/stop")
        return row
    finally:
        ctl.close()


# ------------------------------------------------------------------------------ Optuna
def measure_optuna(db_url, studies, running, args) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    kwargs = {"connect_args": {"timeout": 60}} if db_url.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(db_url, engine_kwargs=kwargs)
    dists = {
        "x": optuna.distributions.FloatDistribution(0.0, 1.0),
        "y": optuna.distributions.FloatDistribution(0.0, 1.0),
    }
    names = []
    for i in range(studies):
        study = optuna.create_study(
            storage=storage,
            study_name=f"capacity-{i}",
            directions=["maximize", "minimize"],
            sampler=optuna.samplers.RandomSampler(seed=i),
        )
        names.append(study.study_name)
    threads = min(args.optuna_threads, running)
    # the R - threads trials no thread works on wait as RUNNING rows, spread over the studies
    for j in range(running - threads):
        optuna.load_study(study_name=names[j % studies], storage=storage).ask(dists)
    counts = {"done": 0, "reports": 0, "errors": 0}
    lock = threading.Lock()
    stop = threading.Event()
    counting = threading.Event()

    def work(i: int) -> None:
        study = optuna.load_study(
            study_name=names[i % studies],
            storage=storage,
            sampler=optuna.samplers.RandomSampler(seed=i),
        )
        while not stop.is_set():
            try:
                trial = study.ask(dists)
                values = values_of(trial.params)
                for k in range(1, args.reports + 1):
                    # what Trial.report stores (it refuses multi-objective studies)
                    storage.set_trial_intermediate_value(trial._trial_id, k, values["accuracy"])
                    if counting.is_set():
                        with lock:
                            counts["reports"] += 1
                study.tell(trial, [values["accuracy"], values["cost"]])
                if counting.is_set():
                    with lock:
                        counts["done"] += 1
            except Exception as err:
                with lock:
                    counts["errors"] += 1
                    counts["last_error"] = repr(err)[:200]

    pool = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    time.sleep(args.warmup)
    counting.set()
    t0 = time.perf_counter()
    time.sleep(args.seconds)
    counting.clear()
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in pool:
        t.join(60)
    storage.engine.dispose() if hasattr(storage, "engine") else None
    return {
        "completions_per_s": counts["done"] / elapsed,
        "reports_per_s": counts["reports"] / elapsed,
        "threads": threads,
        "errors": counts["errors"],
        "last_error": counts.get("last_error"),
    }


# ------------------------------------------------------------------------------ main
def databases(kind: str, pg):
    n = 0
    while True:
        n += 1
        if kind == "sqlite":
            d = Path(tempfile.mkdtemp(prefix="autopeft-cap-"))
            yield f"sqlite:///{d / 'db.sqlite'}", d
        else:
            yield pg.new_database(), Path(tempfile.mkdtemp(prefix="autopeft-cap-"))


def table(rows: list[dict]) -> str:
    head = (
        f"{'db':10s} {'studies':>7s} {'running':>7s} {'who':7s} {'done/s':>8s} {'reports/s':>9s}"
        f" {'demand/s':>8s} {'lag p50/p99 ms':>15s} {'refill p50/p99 ms':>18s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        for who in ("ours", "optuna"):
            m = r.get(who)
            if not m:
                continue
            lag = (
                f"{m['report_lag_p50_ms']:.0f}/{m['report_lag_p99_ms']:.0f}"
                if "report_lag_p50_ms" in m
                else "-"
            )
            refill = (
                f"{m['refill_p50_ms']:.0f}/{m['refill_p99_ms']:.0f}"
                if "refill_p50_ms" in m
                else "-"
            )
            demand = (
                f"{m['demand_completions_per_s']:.0f}" if "demand_completions_per_s" in m else "-"
            )
            lines.append(
                f"{r['db']:10s} {r['studies']:>7d} {r['running']:>7d} {who:7s}"
                f" {m['completions_per_s']:>8.1f} {m['reports_per_s']:>9.0f} {demand:>8s}"
                f" {lag:>15s} {refill:>18s}"
            )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument(
        "--rows", default="1x1,1x10,4x100,4x1000,20x1000", help="STUDIESxRUNNING, comma-separated"
    )
    ap.add_argument("--trial-seconds", type=float, default=2.0)
    ap.add_argument("--reports", type=int, default=10)
    ap.add_argument("--callback-threads", type=int, default=32)
    ap.add_argument("--optuna-threads", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--no-optuna", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    pg = None
    rows: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        for kind in args.db.split(","):
            if kind == "postgresql":
                from tests.api.conftest import Postgres

                pg = Postgres().start()
            dbs = databases(kind, pg)
            for spec in args.rows.split(","):
                studies, running = map(int, spec.split("x"))
                row = {"db": kind, "studies": studies, "running": running}
                url, workdir = next(dbs)
                row["ours"] = measure_ours(url, workdir, studies, running, args)
                if not args.no_optuna:
                    url, _ = next(dbs)
                    row["optuna"] = measure_optuna(url, studies, running, args)
                rows.append(row)
                print(table([row]).splitlines()[-2 if not args.no_optuna else -1], flush=True)
                if not args.no_optuna:
                    print(table([row]).splitlines()[-1], flush=True)
                out.write_text(json.dumps({"rows": rows}, indent=1))
    finally:
        if pg is not None:
            pg.stop()
    doc = {
        "command": "benchmarks/controller_capacity.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "args": vars(args),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    out.write_text(json.dumps(doc, indent=1))
    print(table(rows))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
