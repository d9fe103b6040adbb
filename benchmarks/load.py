"""The controller under many clients at once, measured by a real load tool (Locust), beside a bare
FastAPI endpoint in the same run (issue 31).

For each database (SQLite, then PostgreSQL 15 started in a temp dir) the real controller runs as
in production (one uvicorn process, scheduler on, local executor); 20 users each have a token and a
finished study. Then Locust (headless, its own process, ``benchmarks/load_locust.py``) runs 50,
200 and 1,000 concurrent users for ``--duration`` seconds each, closed loop (the next request as
soon as the last is answered; a 503 waits its ``Retry-After`` as a well-behaved client does), with
this mix of tasks: study polls 30, trials polls (``?after=``) 30, ``/pareto`` 10, study listings 10,
dataset listings 4, ``/me`` 4, token listings 4, and token create + revoke, dataset upload +
delete and study create + delete 1 each (two requests each: 6% of the requests change state). The same Locust users ask ``GET /bare`` of a bare FastAPI app (also
one uvicorn process) at the same concurrency.

A second profile, ``polls``, is a dashboard's steady state alone (study, trials and front polls).

Reported per run: answers/s (all, and 2xx), p50 / p99 of accepted polls (after the first 5 s,
while every user opens its connection), answers by status, and connection errors (resets,
refusals, timeouts). Goals (``GOAL`` lines): at 1,000 users on each
database and in each profile no 500 and no connection error, every refusal a 503 with
``Retry-After``; at 200 users the accepted polls' p99 in the mix <= 1 s, and the polls' 2xx rate
>= 40% of bare FastAPI's (the mix's own rate, writes included, is printed beside it).

    .venv/bin/python benchmarks/load.py                      # ~25 min on 2 cores
    .venv/bin/python benchmarks/load.py --users 200 --duration 20 --dbs sqlite   # smoke

Writes ``benchmarks/results/load.json`` (``--out``). Needs Locust (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from api_throughput import free_port, start_bare, start_controller, stop  # noqa: E402

RESULTS = HERE / "results"
N_USERS = 20
WARMUP_S = 5.0


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def prepare(url: str, db_url: str, work: Path) -> Path:
    """Tokens for ``N_USERS`` users and one finished study each; the context file for Locust."""
    from autopeft.api.admin import create_token
    from autopeft.client import Client

    users = []
    for i in range(N_USERS):
        token = create_token(db_url, f"user{i}")
        client = Client(url, token)
        spec = {**json.loads(json.dumps(STUDY_SPEC)), "name": f"polled-{i}", "max_trials": 3}
        study = client.create_study(spec=spec)
        users.append({"token": token, "study": study.id})
    for user in users:
        study = Client(url, user["token"]).study(user["study"])
        study.wait(timeout=300, poll=0.5, progress=False)
        user["after"] = max(t["id"] for t in study.trials())
    path = work / "context.json"
    path.write_text(json.dumps({"users": users}))
    return path


STUDY_SPEC = {
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


def run_locust(user_class: str, host: str, users: int, duration: int, context: Path, work: Path):
    out = work / f"tally-{user_class}-{users}.json"
    out.unlink(missing_ok=True)
    env = dict(
        os.environ,
        AUTOPEFT_LOAD_CONTEXT=str(context),
        AUTOPEFT_LOAD_OUT=str(out),
        PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    locust = Path(sys.executable).parent / "locust"
    cmd = [
        str(locust),
        "-f",
        str(HERE / "load_locust.py"),
        user_class,
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "--run-time",
        f"{duration}s",
        "--stop-timeout",
        "10",
        "--host",
        host,
        "--only-summary",
        "--loglevel",
        "ERROR",
        "--exit-code-on-error",
        "0",
    ]
    subprocess.run(
        cmd,
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # its own summary table: ours is below
        timeout=duration + 180,
    )
    tally = json.loads(out.read_text())
    return summarise(tally)


def summarise(tally: dict) -> dict:
    by_status: dict[str, int] = {}
    for counts in tally["status"].values():
        for code, n in counts.items():
            by_status[code] = by_status.get(code, 0) + n
    total = sum(n for code, n in by_status.items() if code != "error")
    ok = sum(n for code, n in by_status.items() if code.startswith("2"))
    span = tally["span_s"] or 1.0
    start = min((t for t, _ in tally["all_ms"]), default=0.0)
    # latencies after the ramp-up: the first seconds hold every user's new connection (SYN backlog)
    polls = [ms for t, ms in tally["poll_ms"] if t >= start + WARMUP_S]
    return {
        "answers_per_s": round(total / span, 1),
        "ok_per_s": round(ok / span, 1),
        "accepted_poll_p50_ms": _pct(polls, 0.50),
        "accepted_poll_p99_ms": _pct(polls, 0.99),
        "accepted_poll_mean_ms": round(statistics.fmean(polls), 1) if polls else None,
        "by_status": dict(sorted(by_status.items())),
        "by_request": tally["status"],
        "connection_errors": tally["errors"],
        "n_500": by_status.get("500", 0),
        "n_5xx_not_503": sum(n for c, n in by_status.items() if c.startswith("5") and c != "503"),
        "n_503": by_status.get("503", 0),
        "retry_after_missing": tally["retry_after_missing"],
        "span_s": round(span, 1),
    }


def bench_db(kind: str, args, work: Path) -> dict:
    pg = None
    if kind == "postgresql":
        from tests.api.conftest import Postgres

        pg = Postgres().start()
        db_url = pg.new_database()
    else:
        db_url = f"sqlite:///{work / 'load.db'}"
    port = free_port()
    server = start_controller(
        work,
        port,
        run_scheduler=True,
        db_url=db_url,
        extra_env={"AUTOPEFT_MAX_ACTIVE_STUDIES_PER_USER": "0"},
    )
    url = f"http://127.0.0.1:{port}"
    out = {}
    try:
        import httpx

        context = prepare(url, db_url, work)
        for profile, user_class in (("mix", "ServiceUser"), ("polls", "PollUser")):
            out[profile] = {}
            for users in args.users:
                row = run_locust(user_class, url, users, args.duration, context, work)
                row["readyz"] = httpx.get(url + "/readyz", trust_env=False, timeout=30).json()
                out[profile][str(users)] = row
                _print_row(f"autopeft {kind}, {profile}", users, row)
                time.sleep(3)  # the churn's last studies end
    finally:
        stop(server)
        if pg is not None:
            pg.stop()
    return out


def bench_bare(args, work: Path) -> dict:
    port = free_port()
    proc = start_bare(port)
    context = work / "context-bare.json"
    context.write_text(json.dumps({"users": [{"token": "", "study": 0, "after": 0}]}))
    out = {}
    try:
        for users in args.users:
            row = run_locust(
                "BareUser", f"http://127.0.0.1:{port}", users, args.duration, context, work
            )
            out[str(users)] = row
            _print_row("bare FastAPI", users, row)
    finally:
        stop(proc)
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _print_row(what: str, users: int, row: dict) -> None:
    print(
        f"| {what} | {users} | {row['answers_per_s']} | {row['ok_per_s']} | "
        f"{_ms(row['accepted_poll_p50_ms'])} | {_ms(row['accepted_poll_p99_ms'])} | {row['n_503']} | "
        f"{row['n_5xx_not_503']} | {sum(row['connection_errors'].values())} |",
        flush=True,
    )


def goals(results: dict) -> list[str]:
    lines = []
    bare = results["bare"]
    for db in results["dbs"]:
        runs = results["dbs"][db]
        for profile, rows in runs.items():
            top = rows.get("1000")
            if top is None:
                continue
            bad = top["n_5xx_not_503"] + sum(top["connection_errors"].values())
            met = bad == 0 and top["retry_after_missing"] == 0
            lines.append(
                f"GOAL {db} {profile} 1000 users no 5xx but 503, no connection error, Retry-After "
                f"on every 503: {'met' if met else 'not met'} (500: {top['n_500']}, other 5xx: "
                f"{top['n_5xx_not_503'] - top['n_500']}, connection errors: "
                f"{sum(top['connection_errors'].values())}, 503: {top['n_503']}, without "
                f"Retry-After: {top['retry_after_missing']})"
            )
        mix, polls = runs.get("mix", {}).get("200"), runs.get("polls", {}).get("200")
        if mix is not None and polls is not None and "200" in bare:
            p99 = mix["accepted_poll_p99_ms"]
            share = polls["ok_per_s"] / max(1e-9, bare["200"]["ok_per_s"])
            mix_share = mix["ok_per_s"] / max(1e-9, bare["200"]["ok_per_s"])
            met = p99 is not None and p99 <= 1000 and share >= 0.4
            lines.append(
                f"GOAL {db} 200 users p99 of accepted polls (mix) <= 1 s and polls >= 40% of bare "
                f"FastAPI's answers/s: {'met' if met else 'not met'} (p99 {p99:.0f} ms; polls "
                f"{polls['ok_per_s']} against {bare['200']['ok_per_s']}: {share:.0%}; the whole "
                f"mix, writes included, {mix['ok_per_s']}: {mix_share:.0%})"
            )
    return lines


def main(argv=None) -> int:
    import platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--duration", type=int, default=60, help="seconds a run")
    ap.add_argument("--dbs", nargs="+", default=["sqlite", "postgresql"])
    ap.add_argument("--out", default=str(RESULTS / "load.json"))
    args = ap.parse_args(argv)
    print(
        "| target | users | answers/s | 2xx/s | poll p50 ms | poll p99 ms | 503 | other 5xx | conn. errors |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results = {
        "settings": {"users": args.users, "duration_s": args.duration, "mix": "see load_locust.py"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "dbs": {},
    }
    with tempfile.TemporaryDirectory(prefix="autopeft-load-") as tmp:
        work = Path(tmp)
        results["bare"] = bench_bare(args, work)
        for db in args.dbs:
            sub = work / db
            sub.mkdir()
            results["dbs"][db] = bench_db(db, args, sub)
    results["goals"] = goals(results)
    for line in results["goals"]:
        print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
