"""Dispatch overhead of the Ray executor against Ray Tune (issue 7).

The same workload in the same run, one Ray at a time, on this machine's CPUs:

* **autopeft**: a study of ``--trials`` python trials (``time.sleep(--trial-seconds)``, one
  report) with ``max_parallel`` ``--parallel``, created through REST on the real controller
  (``python -m autopeft.api.server``, uvicorn, SQLite) with ``AUTOPEFT_EXECUTOR=ray``: the
  scheduler asks the optimiser (random), stores every trial, report and result in SQL, and
  runs each trial as a Ray task (1 CPU) on the private local Ray the controller starts.
  Wall time: from the POST to the client seeing the study finished (polling every 0.1 s);
  the server-side span (study ``created_at`` to the last ``finished_at``) is recorded too.
* **Ray Tune**: ``tune.Tuner`` with a function trainable doing the same (sleep, one
  ``tune.report``), ``num_samples=--trials``, ``max_concurrent_trials=--parallel``, random
  search over the same two floats, 1 CPU per trial, results in a temporary storage path;
  twice: with Tune's defaults (a new trainable actor per trial) and with
  ``reuse_actors=True`` (its documented remedy for start-up cost). Wall time:
  ``Tuner.fit()`` (``ray.init`` done before, as the controller's is).

Both run on a Ray with ``--parallel`` CPUs declared. Ideal wall time: ceil(trials / parallel)
x trial seconds. Overhead = wall / ideal - 1. Goal: <= 5% and below Ray Tune's (best variant).

    .venv/bin/python benchmarks/dispatch_overhead.py [--trials 200] [--parallel 2] [--trial-seconds 1]
    .venv/bin/python benchmarks/dispatch_overhead.py --trials 40        # quick run

Prints a table and writes ``benchmarks/results/dispatch_overhead.json``.
"""

from __future__ import annotations

# Light imports only at module level: Ray workers import this module for the workload.
import datetime as dt
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "dispatch_overhead.json"
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
TRIAL_SECONDS_ENV = "AUTOPEFT_BENCH_TRIAL_SECONDS"


def _values(config) -> dict[str, float]:
    return {"accuracy": 1.0 - (config["x"] - 0.3) ** 2, "cost": config["x"] + 0.1 * config["y"]}


def sleep_trial(config, trial):
    """autopeft python workload: sleep, one report, the result."""
    time.sleep(float(os.environ.get(TRIAL_SECONDS_ENV, "1.0")))
    values = _values(config)
    trial.report(0, values)
    return values


def tune_trial(config):
    """Ray Tune function trainable doing the same."""
    from ray import tune

    time.sleep(float(config["trial_seconds"]))
    tune.report(_values(config))


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_controller(work: Path, port: int, args):
    import subprocess

    import httpx

    env = dict(
        os.environ,
        AUTOPEFT_DB_URL=f"sqlite:///{work / 'bench.db'}",
        AUTOPEFT_PORT=str(port),
        AUTOPEFT_HOST="127.0.0.1",
        AUTOPEFT_ARTIFACTS_DIR=str(work / "artifacts"),
        AUTOPEFT_PYTHON_WORKLOADS="all",  # the benchmarks' python workloads (off by default)
        AUTOPEFT_LOG_LEVEL="warning",
        AUTOPEFT_EXECUTOR="ray",
        PYTHONPATH=os.pathsep.join(
            p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH")) if p
        ),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        **{TRIAL_SECONDS_ENV: str(args.trial_seconds)},
    )
    log = open(work / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopeft.api.server"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"controller exited with {proc.returncode}:\n{(work / 'server.log').read_text()[-3000:]}"
            )
        try:
            if (
                httpx.get(
                    f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False
                ).status_code
                == 200
            ):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("controller did not answer /healthz in 180 s")


def stop(proc) -> None:
    import signal

    from autopeft.processes import stop_process

    stop_process(proc, timeout=60)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its Ray left behind
    except ProcessLookupError:
        pass


def _ideal(args) -> float:
    return math.ceil(args.trials / args.parallel) * args.trial_seconds


# -- autopeft ----------------------------------------------------------------------------------
def run_autopeft(work: Path, args) -> dict:
    from autopeft.api.admin import create_token
    from autopeft.client import Client

    db_url = f"sqlite:///{work / 'bench.db'}"
    token = create_token(db_url, "bench")
    port = free_port()
    server = start_controller(work, port, args)
    try:
        client = Client(f"http://127.0.0.1:{port}", token)
        if (
            args.warmup
        ):  # the first Ray workers start (interpreter + imports) outside the measurement
            warm = client.create_study(
                name="warmup",
                space=SPACE,
                objectives=OBJECTIVES,
                optimizer="random",
                workload={"kind": "python", "entrypoint": "dispatch_overhead:sleep_trial"},
                max_trials=args.parallel,
                max_parallel=args.parallel,
            )
            warm.wait(poll=0.1, progress=False)
        t0 = time.monotonic()
        study = client.create_study(
            name="overhead",
            space=SPACE,
            objectives=OBJECTIVES,
            optimizer="random",
            workload={"kind": "python", "entrypoint": "dispatch_overhead:sleep_trial"},
            max_trials=args.trials,
            max_parallel=args.parallel,
        )
        study.wait(poll=0.1, progress=False)
        wall = time.monotonic() - t0
        trials = study.trials()
        assert study.state == "finished" and study.counts["complete"] == args.trials, study.data
        created = dt.datetime.fromisoformat(study.data["created_at"])
        end = max(dt.datetime.fromisoformat(t["finished_at"]) for t in trials)
        server_wall = (end - created).total_seconds()
        ideal = _ideal(args)
        spans = sorted(
            (
                dt.datetime.fromisoformat(t["finished_at"])
                - dt.datetime.fromisoformat(t["started_at"])
            ).total_seconds()
            for t in trials
        )
        in_trial = (
            sum(spans) / args.parallel - ideal
        )  # executor + report round trip + result, per slot
        return {
            "wall_s": wall,
            "server_wall_s": server_wall,
            "ideal_s": ideal,
            "overhead_pct": 100 * (wall / ideal - 1),
            "server_overhead_pct": 100 * (server_wall / ideal - 1),
            "trial_started_to_finished_median_s": spans[len(spans) // 2],
            "overhead_inside_trials_s": in_trial,
            "overhead_between_trials_s": server_wall - ideal - in_trial,
            "attempts": sum(t["attempts"] for t in trials),
        }
    finally:
        stop(server)


# -- Ray Tune ----------------------------------------------------------------------------------
def run_tune(work: Path, args, reuse_actors: bool) -> dict:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import tune

    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=args.parallel,
        object_store_memory=200 * 2**20,
        _temp_dir=str(work / "ray"),
        log_to_driver=False,
    )
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune_trial, {"cpu": 1}),
            param_space={
                "x": tune.uniform(0.0, 1.0),
                "y": tune.uniform(0.0, 1.0),
                "trial_seconds": args.trial_seconds,
            },
            tune_config=tune.TuneConfig(
                num_samples=args.trials,
                max_concurrent_trials=args.parallel,
                metric="accuracy",
                mode="max",
                reuse_actors=reuse_actors,
            ),
            run_config=tune.RunConfig(name="overhead", storage_path=str(work / "tune"), verbose=0),
        )
        t0 = time.monotonic()
        grid = tuner.fit()
        wall = time.monotonic() - t0
        done = sum(1 for r in grid if r.error is None and r.metrics and "accuracy" in r.metrics)
        assert done == args.trials, f"Ray Tune completed {done} of {args.trials} trials"
        ideal = _ideal(args)
        return {
            "wall_s": wall,
            "ideal_s": ideal,
            "overhead_pct": 100 * (wall / ideal - 1),
            "ray_version": ray.__version__,
            "reuse_actors": reuse_actors,
        }
    finally:
        ray.shutdown()


def main() -> int:
    import argparse
    import json
    import platform
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument(
        "--parallel", type=int, default=2, help="trials at once (= CPUs of the Ray)"
    )
    parser.add_argument("--trial-seconds", type=float, default=1.0)
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="run a small study first so that our Ray workers are started (Tune gets none)",
    )
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument(
        "--tune-variants",
        default="default,reuse",
        help="Ray Tune runs: default (a new trainable actor per trial) and/or reuse "
        "(TuneConfig(reuse_actors=True))",
    )
    parser.add_argument("--skip-autopeft", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="autopeft-dispatch-") as tmp:
        if not args.skip_autopeft:
            (Path(tmp) / "a").mkdir()
            result["autopeft"] = run_autopeft(Path(tmp) / "a", args)
        if not args.skip_tune:
            result["ray_tune"] = {}
            for variant in args.tune_variants.split(","):
                (Path(tmp) / f"t-{variant}").mkdir()
                result["ray_tune"][variant] = run_tune(
                    Path(tmp) / f"t-{variant}", args, variant == "reuse"
                )
    if "autopeft" in result:
        ours = result["autopeft"]["overhead_pct"]
        tune_pct = min(
            (t["overhead_pct"] for t in result.get("ray_tune", {}).values()), default=None
        )
        result["goal"] = {
            "overhead_le_5pct": ours <= 5.0,
            "below_ray_tune": None if tune_pct is None else ours < tune_pct,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        f"\nDispatch overhead: {args.trials} trials x {args.trial_seconds:g} s, {args.parallel} at once "
        f"({os.cpu_count()} CPUs); ideal {_ideal(args):.0f} s"
    )
    print(f"{'runner':<44}{'wall s':>9}{'overhead':>10}")
    if "autopeft" in result:
        a = result["autopeft"]
        print(
            f"{'autopeft (REST + scheduler + Ray + SQLite)':<44}{a['wall_s']:>9.1f}{a['overhead_pct']:>9.2f}%"
        )
        print(
            f"{'  server side (created -> last finished)':<44}{a['server_wall_s']:>9.1f}"
            f"{a['server_overhead_pct']:>9.2f}%"
        )
        print(
            f"{'    inside trials (Ray task + report + result)':<44}{a['overhead_inside_trials_s']:>9.1f}"
            f"{100 * a['overhead_inside_trials_s'] / a['ideal_s']:>9.2f}%"
        )
        print(
            f"{'    between trials (scheduler, SQL, dispatch)':<44}{a['overhead_between_trials_s']:>9.1f}"
            f"{100 * a['overhead_between_trials_s'] / a['ideal_s']:>9.2f}%"
        )
    for t in result.get("ray_tune", {}).values():
        label = f"Ray Tune {t['ray_version']} (Tuner.fit, reuse_actors={t['reuse_actors']})"
        print(f"{label:<44}{t['wall_s']:>9.1f}{t['overhead_pct']:>9.2f}%")
    if "goal" in result:
        g = result["goal"]
        print(
            f"goal <= 5%: {'met' if g['overhead_le_5pct'] else 'NOT met'}; below Ray Tune (best variant): "
            f"{'n/a' if g['below_ray_tune'] is None else ('yes' if g['below_ray_tune'] else 'NO')}"
        )
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
