"""Controller throughput and bookkeeping overhead (issue 6).

1. **Trials listing** of a 1,000-trial study (``GET /api/v1/studies/{id}/trials``), served by
   the real controller process (uvicorn, SQLite, one process) and measured by a loopback load
   generator in its own process (asyncio, raw HTTP/1.1 keep-alive, closed loop,
   ``--connections`` in flight): requests/s, p50 and p99 latency. In the same run the same
   generator measures a bare FastAPI endpoint (``GET /bare`` returning a constant JSON, also
   uvicorn in its own process). Three listing variants: the default page (100 trials), the
   incremental poll a client makes every second (``?after=<last id>``: nothing new) and the
   whole study in one page (``?limit=1000``). The study is created through REST (so validated);
   its 1,000 complete trials are written straight into the store with the controller's models
   (running them would only cost time). Goal: listing >= 40% of bare requests/s, p99 <= 20 ms.
2. **Bookkeeping overhead**: 200 python trials of 1 s each (``time.sleep(1)``, one report), 2 in
   parallel, through REST, scheduler, local executor (one process per trial) and SQLite, against
   the ideal wall time 200 x 1 s / 2 = 100 s. Wall time is the study's ``created_at`` to the last
   trial's ``finished_at`` (server clock). Goal: <= 5%.

    .venv/bin/python benchmarks/api_throughput.py [--duration 5] [--connections 8] [--trials 200]

Prints a table and writes ``benchmarks/results/api_throughput.json``.
"""

from __future__ import annotations

# Light imports only at module level: trial processes import this module for the workload.
import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "api_throughput.json"
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


# -- the workload of part 2 (runs in the trial processes: this folder is on their PYTHONPATH) --
def one_second_trial(config, trial):
    time.sleep(1.0)
    values = {"accuracy": 1.0 - (config["x"] - 0.3) ** 2, "cost": config["x"] + 0.1 * config["y"]}
    trial.report(0, values)
    return values


# -- bare FastAPI app --------------------------------------------------------------------------
def bare_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/bare")
    def bare():
        return {"status": "ok"}

    return app


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start_controller(
    work: Path,
    port: int,
    run_scheduler: bool,
    cache: bool = True,
    db_url: str | None = None,
    extra_env: dict[str, str] | None = None,
):
    import subprocess

    env = dict(
        os.environ,
        AUTOPEFT_LISTING_CACHE="true" if cache else "false",
        AUTOPEFT_DB_URL=db_url or f"sqlite:///{work / 'bench.db'}",
        AUTOPEFT_PORT=str(port),
        AUTOPEFT_HOST="127.0.0.1",
        AUTOPEFT_ARTIFACTS_DIR=str(work / "artifacts"),
        AUTOPEFT_PYTHON_WORKLOADS="all",  # the benchmarks' python workloads (off by default)
        AUTOPEFT_WORKER_PYTHONPATH=str(HERE),
        AUTOPEFT_LOG_LEVEL="warning",
        AUTOPEFT_RUN_SCHEDULER="true" if run_scheduler else "false",
        **(extra_env or {}),
    )
    log = open(work / f"server-{port}.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopeft.api.server"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


def start_bare(port: int):
    import subprocess

    code = (
        f"import sys, uvicorn; sys.path.insert(0, {str(HERE)!r}); from api_throughput import bare_app; "
        f"uvicorn.run(bare_app(), host='127.0.0.1', port={port:d}, log_level='warning', access_log=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    wait_http(f"http://127.0.0.1:{port}/bare", proc)
    return proc


def stop(proc) -> None:
    from autopeft.processes import stop_process

    stop_process(proc)


# -- load generator (its own process) ----------------------------------------------------------
async def _worker(
    port: int, request: bytes, stop_at: float, warm_until: float, lat: list[float]
) -> int:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return errors
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors += 1
            if t0 >= warm_until:
                lat.append(t1 - t0)
    finally:
        writer.close()


def _load(
    port: int, path: str, token: str | None, connections: int, duration: float, warmup: float, out
) -> None:
    headers = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n"
    if token:
        headers += f"Authorization: Bearer {token}\r\n"
    request = (headers + "\r\n").encode()

    import asyncio

    async def main():
        lat: list[float] = []
        start = time.perf_counter()
        errors = await asyncio.gather(
            *[
                _worker(port, request, start + warmup + duration, start + warmup, lat)
                for _ in range(connections)
            ]
        )
        return lat, sum(errors)

    lat, errors = asyncio.run(main())
    out.put({"latencies": lat, "errors": errors})


def measure(
    port: int, path: str, token: str | None, connections: int, duration: float, warmup: float = 1.0
) -> dict:
    import multiprocessing as mp
    import statistics

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_load, args=(port, path, token, connections, duration, warmup, q))
    p.start()
    res = q.get(timeout=duration + warmup + 120)
    p.join()
    lat = sorted(res["latencies"])
    n = len(lat)
    return {
        "path": path,
        "requests": n,
        "errors": res["errors"],
        "requests_per_s": n / duration,
        "p50_ms": 1000 * lat[n // 2] if n else None,
        "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))] if n else None,
        "mean_ms": 1000 * statistics.fmean(lat) if n else None,
    }


# -- part 1 ------------------------------------------------------------------------------------
def seed_trials(db_url: str, study_id: int, n: int) -> None:
    import random

    from autopeft.api.db import Database
    from autopeft.api.models import Trial, utcnow

    rng = random.Random(0)
    db = Database(db_url)
    with db.write() as s:
        now = utcnow()
        for i in range(n):
            x, y = rng.random(), rng.random()
            s.add(
                Trial(
                    study_id=study_id,
                    number=i,
                    state="complete",
                    config={"x": x, "y": y},
                    values={"accuracy": 1 - (x - 0.3) ** 2, "cost": x + 0.1 * y},
                    optimizer_id=str(i),
                    attempts=1,
                    created_at=now,
                    started_at=now,
                    finished_at=now,
                )
            )
    db.dispose()


def part_listing(work: Path, args, db_url: str | None = None) -> dict:
    """On SQLite: one controller. On PostgreSQL (``db_url``): two replicas, every request to the
    follower (the leader holds the scheduler lease; the follower's cache stays valid through the
    change feed), the uncached rows with the follower's cache off."""
    from autopeft.api.admin import create_token
    from autopeft.client import Client

    replicas = db_url is not None
    db_url = db_url or f"sqlite:///{work / 'bench.db'}"
    leader = None
    if replicas:
        leader = start_controller(work, free_port(), run_scheduler=True, db_url=db_url)
    token = create_token(db_url, "bench")
    port, bare_port = free_port(), free_port()
    server = start_controller(work, port, run_scheduler=replicas, db_url=db_url)
    bare = start_bare(bare_port)
    try:
        client = Client(f"http://127.0.0.1:{port}", token)
        study = client.create_study(
            name="listing",
            space=SPACE,
            objectives=OBJECTIVES,
            optimizer="random",
            workload={"kind": "python", "entrypoint": "api_throughput:one_second_trial"},
            max_trials=args.listing_trials,
        )
        seed_trials(db_url, study.id, args.listing_trials)
        trials = study.trials()
        assert len(trials) == args.listing_trials, len(trials)
        last = trials[-1]["id"]
        base = f"/api/v1/studies/{study.id}/trials"
        runs = {"bare": measure(bare_port, "/bare", None, args.connections, args.duration)}
        for name, path in (
            ("listing_default_page", base),
            ("listing_poll_after_last", f"{base}?after={last}"),
            ("listing_whole_study", f"{base}?limit={args.listing_trials}"),
        ):
            runs[name] = measure(port, path, token, args.connections, args.duration)
        stop(server)
        server = start_controller(work, port, replicas, cache=False, db_url=db_url)
        for name, path in (
            ("uncached_default_page", base),
            ("uncached_poll_after_last", f"{base}?after={last}"),
            ("uncached_whole_study", f"{base}?limit={args.listing_trials}"),
        ):
            runs[name] = measure(port, path, token, args.connections, args.duration)
        for name, r in runs.items():
            r["vs_bare"] = r["requests_per_s"] / runs["bare"]["requests_per_s"]
            r["meets_goal"] = name == "bare" or (r["vs_bare"] >= 0.40 and r["p99_ms"] <= 20.0)
        return runs
    finally:
        stop(server)
        stop(bare)
        if leader is not None:
            stop(leader)


# -- part 2 ------------------------------------------------------------------------------------
def part_overhead(work: Path, args) -> dict:
    import statistics

    from autopeft.api.admin import create_token
    from autopeft.client import Client

    db_url = f"sqlite:///{work / 'bench.db'}"
    token = create_token(db_url, "bench")
    port = free_port()
    server = start_controller(work, port, run_scheduler=True)
    try:
        client = Client(f"http://127.0.0.1:{port}", token)
        t0 = time.monotonic()
        study = client.create_study(
            name="overhead",
            space=SPACE,
            objectives=OBJECTIVES,
            optimizer="random",
            workload={"kind": "python", "entrypoint": "api_throughput:one_second_trial"},
            max_trials=args.trials,
            max_parallel=2,
        )
        study.wait(poll=0.1, progress=False)
        client_wall = time.monotonic() - t0
        trials = study.trials()
        assert study.state == "finished" and study.counts["complete"] == args.trials, study.data
        created = dt.datetime.fromisoformat(study.data["created_at"])
        end = max(dt.datetime.fromisoformat(t["finished_at"]) for t in trials)
        wall = (end - created).total_seconds()
        ideal = args.trials * 1.0 / 2
        per_trial = [
            (
                dt.datetime.fromisoformat(t["finished_at"])
                - dt.datetime.fromisoformat(t["started_at"])
            ).total_seconds()
            for t in trials
        ]
        return {
            "trials": args.trials,
            "parallel": 2,
            "trial_seconds": 1.0,
            "ideal_s": ideal,
            "wall_s": wall,
            "client_wall_s": client_wall,
            "overhead_pct": 100 * (wall - ideal) / ideal,
            "trial_started_to_finished_median_s": statistics.median(per_trial),
            "meets_goal": 100 * (wall - ideal) / ideal <= 5.0,
        }
    finally:
        stop(server)


def main() -> int:
    import argparse
    import json
    import platform
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per endpoint")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--listing-trials", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=200, help="trials of the overhead part")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: the listing on a follower of two replicas (a throwaway server; the "
        "overhead part is skipped)",
    )
    args = parser.parse_args()
    results = RESULTS if args.db == "sqlite" else RESULTS.with_name("api_throughput_pg.json")
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="autopeft-bench-") as tmp:
        (Path(tmp) / "a").mkdir()
        if args.db == "postgresql":
            from tests.api.conftest import Postgres

            pg = Postgres().start()
            try:
                result["listing"] = part_listing(Path(tmp) / "a", args, pg.new_database())
            finally:
                pg.stop()
        else:
            result["listing"] = part_listing(Path(tmp) / "a", args)
        if not args.skip_overhead and args.db == "sqlite":
            (Path(tmp) / "b").mkdir()
            result["overhead"] = part_overhead(Path(tmp) / "b", args)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=1))
    print(
        f"\nTrials listing ({'a follower of two replicas on PostgreSQL' if args.db != 'sqlite' else 'SQLite'}), "
        f"{args.listing_trials}-trial study, {args.connections} connections, "
        f"{args.duration:g} s per endpoint (loopback, {os.cpu_count()} CPUs)"
    )
    print(
        f"{'endpoint':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs bare':>9}  goal (>=40%, p99<=20ms)"
    )
    for name, r in result["listing"].items():
        goal = "" if name == "bare" else ("met" if r["meets_goal"] else "NOT met")
        print(
            f"{name:<26}{r['requests_per_s']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{100 * r['vs_bare']:>8.0f}%  {goal}"
        )
    if "overhead" in result:
        o = result["overhead"]
        print(
            f"\nBookkeeping overhead: {o['trials']} trials x {o['trial_seconds']:g} s, {o['parallel']} parallel: "
            f"wall {o['wall_s']:.1f} s vs ideal {o['ideal_s']:.0f} s -> {o['overhead_pct']:+.2f}% "
            f"(goal <= 5%: {'met' if o['meets_goal'] else 'NOT met'}); client-observed {o['client_wall_s']:.1f} s"
        )
    print(f"\nwrote {results.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
