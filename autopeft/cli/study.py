"""``autopeft study create FILE | list | show ID | stop ID | resume ID | wait ID | export ID ... |
extend ID | clone ID | cancel-trial TRIAL | compare ID ID ... | webhook ID``.

``extend ID --trials N [--seconds S] [--epochs E]`` adds budget (a finished study runs again);
``enqueue ID --config JSON ...`` queues configs to try next and ``attach ID --config JSON --values
JSON`` tells a result measured elsewhere (``autopeft.cli.outside``);
``clone ID [--set KEY=VALUE ...] [--file PATCH]`` submits a copy with changes (dotted keys, values
as YAML: ``--set workload.epochs=3``); ``cancel-trial TRIAL`` ends one queued or running trial.

``webhook ID [--ping]`` shows the study's webhook and its recent deliveries (``--ping`` first
queues a test delivery); ``webhook ID --set URL [--secret-env VAR] [--events finished,front]``
gives it one or replaces it (the secret is read from the environment variable VAR, never from the
command line), ``webhook ID --remove`` takes it away.

``export ID TRIAL DIR`` unpacks one trial's adapter into DIR; ``export ID --output FILE
[--format csv|parquet]`` writes the trials table (pandas, ``Study.to_dataframe()``) and
``export ID --adapters FILE.zip`` zips the adapters of the Pareto trials; ``export ID --front
FILE.json`` writes the validation front, which ``create FILE --warm-start-from FILE.json
[--warm-start-top K]`` starts another study from (its configs mapped onto the new space and
trained first).

Talks to a running controller: ``--url`` (or ``$AUTOPEFT_URL``, default http://127.0.0.1:8642)
and ``--token`` (or ``$AUTOPEFT_TOKEN``). FILE is a study spec in YAML or JSON (the REST body).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autopeft.cli._remote import client as _client
from autopeft.cli._remote import format_table, remote_options
from autopeft.cli._remote import run as _run
from autopeft.cli.export import _cmd_export


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("study", help="submit and follow studies on a controller")
    common = remote_options()
    ssub = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    p = ssub.add_parser("create", parents=[common], help="submit a study spec (YAML or JSON file)")
    p.add_argument("file")
    p.add_argument("--wait", action="store_true", help="wait for it to end, with a progress bar")
    p.add_argument(
        "--warm-start-from",
        metavar="FRONT.json",
        help="start from an exported front (`export ID --front FILE`): its configs, best first, "
        "are mapped onto this study's space and trained first (optimizer.options.warm_start)",
    )
    p.add_argument(
        "--warm-start-top", type=int, metavar="K", help="at most K configs of the front (all)"
    )
    p.set_defaults(func=_cmd_create)
    p = ssub.add_parser(
        "plan",
        parents=[common],
        help="what a study spec would cost, before it runs (nothing starts)",
    )
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_plan)
    p = ssub.add_parser("list", parents=[common], help="your studies (searchable)")
    p.add_argument("--search", "-q", help="text in the name, the notes or a tag")
    p.add_argument("--tag", action="append", default=[], help="only studies with this tag")
    p.set_defaults(func=_cmd_list)
    p = ssub.add_parser(
        "note", parents=[common], help="set (or with no TEXT, clear) a study's or trial's notes"
    )
    p.add_argument("id", type=int)
    p.add_argument("text", nargs="?", default=None)
    p.add_argument("--trial", action="store_true", help="ID is a trial's id")
    p.set_defaults(func=_cmd_note)
    p = ssub.add_parser("tag", parents=[common], help="add or remove a study's or trial's tags")
    p.add_argument("id", type=int)
    p.add_argument("--add", action="append", default=[], metavar="TAG")
    p.add_argument("--remove", action="append", default=[], metavar="TAG")
    p.add_argument("--trial", action="store_true", help="ID is a trial's id")
    p.set_defaults(func=_cmd_tag)
    for name, helptext, func in (
        ("show", "one study with its Pareto front", _cmd_show),
        ("stop", "stop a study (running trials go back to the queue)", _cmd_stop),
        ("resume", "resume a stopped study", _cmd_resume),
        ("wait", "wait for a study to end, with a progress bar", _cmd_wait),
    ):
        p = ssub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("id", type=int)
        p.add_argument("--json", action="store_true", help="print JSON") if name == "show" else None
        p.set_defaults(func=func)
    p = ssub.add_parser(
        "compare", parents=[common], help="studies side by side: front, hypervolume, compute"
    )
    p.add_argument("ids", type=int, nargs="+", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_compare)
    p = ssub.add_parser(
        "importance",
        parents=[common],
        help="which searched parameters matter, per objective (Optuna's fANOVA)",
    )
    p.add_argument("id", type=int)
    p.add_argument("--evaluator", choices=["fanova", "ped_anova", "mdi"], default="fanova")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_importance)
    p = ssub.add_parser(
        "extend", parents=[common], help="add budget to a study (a finished one runs again)"
    )
    p.add_argument("id", type=int)
    p.add_argument("--trials", type=int, default=0, help="trials to add")
    p.add_argument("--seconds", type=float, default=0, help="seconds to add to its time budget")
    p.add_argument(
        "--epochs", type=float, default=0, help="training epochs to add to its compute budget"
    )
    p.set_defaults(func=_cmd_extend)
    from autopeft.cli import outside

    outside.register(ssub, common)  # enqueue, attach
    p = ssub.add_parser("clone", parents=[common], help="submit a copy of a study with changes")
    p.add_argument("id", type=int)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a change, dotted key and YAML value (e.g. workload.epochs=3, max_trials=20); repeatable",
    )
    p.add_argument("--file", help="changes as a YAML / JSON mapping (merged over the spec)")
    p.set_defaults(func=_cmd_clone)
    p = ssub.add_parser(
        "cancel-trial", parents=[common], help="cancel one queued or running trial (it ends failed)"
    )
    p.add_argument("trial", type=int)
    p.set_defaults(func=_cmd_cancel_trial)
    p = ssub.add_parser(
        "webhook", parents=[common], help="a study's webhook and its recent deliveries"
    )
    p.add_argument("id", type=int)
    p.add_argument("--ping", action="store_true", help="first queue a test delivery (event ping)")
    p.add_argument("--set", metavar="URL", help="give the study this webhook (replaces its one)")
    p.add_argument(
        "--secret-env", metavar="VAR", help="with --set: the signing secret is in this variable"
    )
    p.add_argument("--events", help="with --set: comma-separated (finished, failed, front; all)")
    p.add_argument("--remove", action="store_true", help="remove the study's webhook")
    p.add_argument("--limit", type=int, default=20, help="deliveries shown, newest first (20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_webhook)
    p = ssub.add_parser(
        "export",
        parents=[common],
        help="download a trial's adapter into DIR, or the trials table / Pareto adapters",
        description="export ID TRIAL DIR: one trial's adapter into DIR.  "
        "export ID --output FILE [--format csv|parquet] [--adapters FILE.zip]: "
        "the study's trials as a table, the Pareto trials' adapters as one zip.",
    )
    p.add_argument("id", type=int)
    p.add_argument("trial", type=int, nargs="?", help="trial id (with DIR)")
    p.add_argument("dir", nargs="?", help="folder for the trial's adapter")
    p.add_argument("--output", "-o", help="write the trials table here (one row per trial)")
    p.add_argument(
        "--format",
        choices=["csv", "parquet"],
        help="table format (default: from the --output suffix, .parquet or else csv)",
    )
    p.add_argument("--adapters", help="zip the adapters of the Pareto trials into this file")
    p.add_argument(
        "--merged",
        action="store_true",
        help="with TRIAL DIR: the base model with the adapter merged into its weights (a plain "
        "transformers folder) instead of the adapter",
    )
    p.add_argument(
        "--front", help="write the validation front (configs, values) as JSON for a warm start"
    )
    p.set_defaults(func=_cmd_export)


def load_spec(path: str) -> dict:
    import yaml

    from autopeft.errors import InvalidConfig

    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise InvalidConfig(f"{path}: a study spec must be a mapping", path)
    return data


#: objectives the held-out test evaluation measures (others, e.g. trainable_params, do not change)
TESTED = ("accuracy", "macro_f1", "loss", "exact_match", "perplexity")


def _kind_mark(trial: dict) -> str:
    """An attached result (measured elsewhere) is marked on the front."""
    return "attached" if trial.get("kind") == "attached" else ""


def pareto_table(study) -> str:
    """The validation front, each tested objective on validation and on the held-out test split
    side by side ("-" until tested); baselines marked by their name; sorted by trainable params.
    A share objective (accuracy, exact_match) shows its 95% interval on that split in brackets.
    With replicates, values are seed means ("runs" says over how many); "~best" marks the points
    that cannot be told apart from the best at 95% on test (validation before it is tested)."""
    names = [o["name"] for o in study.spec["objectives"]]
    tested = {t["id"]: t for t in study.pareto(split="test")}
    front = study.pareto()
    replicated = any(t.get("seeds") for t in front)
    headers = ["trial", "number", "baseline"] + (["runs"] if replicated else [])
    for n in names:
        headers += [f"{n} (val)", f"{n} (test)"] if n in TESTED else [n]
    headers.append("~best")
    rows = []
    for t in front:
        row = [t["id"], t["number"], t.get("label") or _kind_mark(t)]
        if replicated:
            row.append((t.get("seeds") or {}).get("runs", 1))
        for n in names:
            row.append(_with_interval(t, n))
            if n in TESTED:
                row.append(_with_interval(tested.get(t["id"], {}), n))
        tie = tested.get(t["id"], {}).get("tied_with_best")
        tie = t.get("tied_with_best") if tie is None else tie
        row.append("yes" if tie else "" if tie is None else "no")
        rows.append(row)
    if "trainable_params" in names:
        col = headers.index("trainable_params")
        rows.sort(key=lambda r: r[col] if isinstance(r[col], (int, float)) else 0.0)
    return format_table(rows, headers)


def _with_interval(trial: dict, name: str):
    """``trial``'s value of ``name``, as "0.6980 [0.656, 0.737]" when /pareto gave its interval."""
    value = (trial.get("values") or {}).get(name)
    iv = (trial.get("intervals") or {}).get(name)
    if value is None or not iv:
        return value
    return f"{value:.4f} [{iv['low']:.3f}, {iv['high']:.3f}]"


@_run
def _cmd_create(args: argparse.Namespace) -> int:
    from autopeft.errors import InvalidConfig

    spec = load_spec(args.file)
    if args.warm_start_from:
        from autopeft.client import front_configs

        optimizer = spec.setdefault("optimizer", {"name": "mobo"})
        if not isinstance(optimizer, dict):
            raise InvalidConfig("optimizer must be a mapping", "optimizer")
        options = optimizer.setdefault("options", {})
        options["warm_start"] = front_configs(args.warm_start_from, args.warm_start_top)
    study = _client(args).create_study(spec=spec)
    print(f"study {study.id} ({study.name}) created, state {study.state}")
    if args.wait:
        study.wait()
        print(pareto_table(study))
    return 0


@_run
def _cmd_plan(args: argparse.Namespace) -> int:
    plan = _client(args).plan_study(spec=load_spec(args.file))
    if args.json:
        print(json.dumps(plan, indent=1))
        return 0
    print(format_plan(plan))
    return 0


def format_plan(plan: dict) -> str:
    """A plan (``POST /studies/plan``) as the lines the CLI and the demo print."""
    budget = ", ".join(
        f"{k} {plan[k]:g}" for k in ("max_trials", "max_epochs", "max_seconds") if plan.get(k)
    )
    lines = [f"budget: {budget}; {plan['max_parallel']} in parallel"]
    if plan["epochs_per_trial"] is not None:
        base = ", ".join(f"{b['name']} {b['epochs']:g}" for b in plan["baselines"]) or "none"
        lines.append(
            f"a full trial: {plan['epochs_per_trial']:g} epochs; baselines (epochs): {base}"
        )
    design = plan["initial_design"]
    lines.append(
        f"full search trials the budget buys: about {plan['full_trials']}"
        + (
            f"; {plan['optimizer']}'s model chooses from trial {design + 1} of the search on"
            if design
            else ""
        )
    )
    if plan["memory_mb"]:
        lo, hi = plan["memory_mb"]["min"], plan["memory_mb"]["max"]
        lines.append(f"predicted peak training memory: {lo:,.0f}-{hi:,.0f} MiB a trial")
    if plan.get("trainable_params"):
        lo, hi = plan["trainable_params"]["min"], plan["trainable_params"]["max"]
        lines.append(f"trainable parameters: {lo:,}-{hi:,} (exact, over the space)")
    if plan["seconds_per_epoch"] is not None:
        lines.append(
            f"measured: {plan['seconds_per_epoch']:.1f} s an epoch (median of "
            f"{plan['measured_trials']} earlier trials); the budget takes about "
            f"{plan['estimated_seconds'] / 60:.1f} min"
        )
    else:
        lines.append(
            "time: not measured yet (no earlier trial of this model, data and sizes)"
            + (
                "; max_seconds may end the study before that many"
                if plan.get("max_seconds")
                else ""
            )
        )
    lines += [f"warning: {w}" for w in plan["warnings"]]
    return "\n".join(lines)


@_run
def _cmd_list(args: argparse.Namespace) -> int:
    rows = [
        [
            s.id,
            s.name,
            s.state,
            s.counts.get("complete", 0),
            s.counts.get("running", 0),
            s.counts.get("failed", 0),
            s.spec.get("max_trials"),
            ", ".join(s.tags),
        ]
        for s in _client(args).studies(args.search, args.tag)
    ]
    print(
        format_table(
            rows, ["id", "name", "state", "complete", "running", "failed", "max_trials", "tags"]
        )
    )
    return 0


@_run
def _cmd_note(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.trial:
        row = client.annotate_trial(args.id, notes=args.text)
        print(f"trial {row['id']}: notes {'set' if row['notes'] else 'cleared'}")
    else:
        study = client.study(args.id).annotate(notes=args.text)
        print(f"study {study.id}: notes {'set' if study.notes else 'cleared'}")
    return 0


@_run
def _cmd_tag(args: argparse.Namespace) -> int:
    client = _client(args)
    old = client.trial(args.id)["tags"] if args.trial else client.study(args.id).tags
    drop = {t.lower() for t in args.remove}
    tags = [t for t in [*old, *args.add] if t.lower() not in drop]
    if args.trial:
        tags = client.annotate_trial(args.id, tags=tags)["tags"]
    else:
        tags = client.study(args.id).annotate(tags=tags).tags
    print(f"{'trial' if args.trial else 'study'} {args.id}: tags {', '.join(tags) or '(none)'}")
    return 0


@_run
def _cmd_show(args: argparse.Namespace) -> int:
    client = _client(args)
    study = client.study(args.id)
    if args.json:
        print(
            json.dumps(
                {
                    "study": study.data,
                    "pareto": study.pareto(),
                    "pareto_test": study.pareto(split="test"),
                    "hypervolume": study.hypervolume(),
                    "hypervolume_test": study.hypervolume(split="test"),
                },
                indent=1,
                default=str,
            )
        )
        return 0
    print(f"study {study.id}: {study.name}  state {study.state}  trials {study.counts}")
    print(
        f"hypervolume {study.hypervolume():.6g} (validation), {study.hypervolume(split='test'):.6g} (test)"
    )
    print(pareto_table(study))
    infeasible = study.infeasible()
    if infeasible:
        print(f"\n{len(infeasible)} infeasible trial(s), left off the front and the hypervolume:")
        for t in infeasible:
            print(
                f"  trial {t['id']} (#{t['number']}): {t.get('infeasible_reason') or 'violates a constraint'}"
            )
    return 0


@_run
def _cmd_compare(args: argparse.Namespace) -> int:
    result = _client(args).compare(args.ids)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    first = result["objectives"][0]
    sign = 1 if first["direction"] == "maximize" else -1
    rows = []
    for s in result["studies"]:
        values = [t["values"][first["name"]] for t in s["front"]]
        best = max(values, key=lambda v: sign * v) if values else None
        rows.append(
            [s["id"], s["name"], s["state"], len(s["front"]), best, s["compute"], s["hypervolume"]]
        )
    header = ["study", "name", "state", "front", f"best {first['name']}", "epochs", "hypervolume"]
    print(format_table(rows, header))
    ref = result["reference_point"]
    print(f"\nhypervolume against one reference point: {ref}")
    return 0


@_run
def _cmd_importance(args: argparse.Namespace) -> int:
    result = _client(args).study(args.id).importance(args.evaluator)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    names = list(result["objectives"])
    params = sorted(
        {p for imp in result["objectives"].values() if imp for p in imp},
        key=lambda p: -max((imp or {}).get(p, 0.0) for imp in result["objectives"].values()),
    )
    if params:
        rows = [[p] + [(result["objectives"][n] or {}).get(p) for n in names] for p in params]
        print(format_table(rows, ["parameter", *names]))
    print(
        f"\n{result['evaluator']} over {result['n_trials']} complete search trials"
        + (
            f"; left out (not in every trial): {', '.join(result['excluded'])}"
            if result["excluded"]
            else ""
        )
        + (f"; {result['reason']}" if result["reason"] else "")
    )
    return 0


@_run
def _cmd_stop(args: argparse.Namespace) -> int:
    study = _client(args).study(args.id).stop()
    print(f"study {study.id}: {study.state}")
    return 0


@_run
def _cmd_resume(args: argparse.Namespace) -> int:
    study = _client(args).study(args.id).resume()
    print(f"study {study.id}: {study.state}")
    return 0


@_run
def _cmd_wait(args: argparse.Namespace) -> int:
    study = _client(args).study(args.id).wait()
    print(f"study {study.id}: {study.state} {study.counts}")
    return 0 if study.state == "finished" else 1


@_run
def _cmd_extend(args: argparse.Namespace) -> int:
    study = _client(args).study(args.id).extend(args.trials, args.seconds, args.epochs)
    spec = study.spec
    print(
        f"study {study.id}: {study.state}, max_trials {spec.get('max_trials')}"
        + "".join(
            f", {k} {spec[k]:g}" for k in ("max_seconds", "max_epochs") if spec.get(k) is not None
        )
    )
    return 0


def parse_overrides(pairs: list[str], file: str | None) -> dict:
    """``--file`` then each ``--set a.b=value`` (YAML value) as one merge patch."""
    import yaml

    patch = load_spec(file) if file else {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"error: --set wants KEY=VALUE, got {pair!r}")
        node = patch
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return patch


@_run
def _cmd_clone(args: argparse.Namespace) -> int:
    patch = parse_overrides(args.set, args.file)
    clone = _client(args).study(args.id).clone(patch)
    print(f"study {clone.id} ({clone.name}) created from study {args.id}, state {clone.state}")
    return 0


@_run
def _cmd_cancel_trial(args: argparse.Namespace) -> int:
    trial = _client(args).cancel_trial(args.trial)
    print(
        f"trial {trial['id']} (#{trial['number']}): {trial['state']}"
        + (f" ({trial['error']})" if trial.get("error") else "")
    )
    return 0


@_run
def _cmd_webhook(args: argparse.Namespace) -> int:
    import os

    study = _client(args).study(args.id)
    if args.remove:
        study.delete_webhook()
        print(f"study {study.id}: webhook removed")
        return 0
    if args.set:
        secret = None
        if args.secret_env:
            secret = os.environ.get(args.secret_env)
            if not secret:
                raise SystemExit(f"error: ${args.secret_env} is not set")
        events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
        study.set_webhook(args.set, secret, events)
    if args.ping:
        ping = study.ping_webhook()
        print(f"ping queued: delivery {ping['event_id']}")
    hook = study.webhook(limit=args.limit)
    if args.json:
        print(json.dumps(hook, indent=1, default=str))
        return 0
    print(
        f"study {study.id} webhook: {hook['url']}  events {', '.join(hook['events'])}  "
        f"{'signed' if hook['signed'] else 'unsigned (no secret)'}"
    )
    if hook["refused"]:
        print(f"refused by the server now: {hook['refused']}")
    rows = [
        [
            d["created_at"],
            d["event"],
            d["state"],
            d["attempts"],
            d["status_code"],
            d["error"] or "",
            d["event_id"],
        ]
        for d in hook["deliveries"]
    ]
    print(format_table(rows, ["created", "event", "state", "tries", "status", "error", "event id"]))
    return 0
