"""``autopeft dataset upload FILE | list | show ID | rm ID``: your datasets on a controller.

``upload FILE [--name N] [--text-column C[,C2]] [--label-column L] [--format csv|tsv|jsonl]
[--encoding E] [--kind classification|sft]`` sends a CSV / TSV / JSONL file (checked by the server:
errors name the row and column) and prints its id: use it in a study spec as
``workload.dataset_id``. An SFT dataset (JSONL of prompt / completion or chat messages records, for
a causal_lm study) is detected from its first record, or declared with ``--kind sft``. Talks to a running
controller: ``--url`` / ``$AUTOPEFT_URL`` and ``--token`` / ``$AUTOPEFT_TOKEN``.
"""

from __future__ import annotations

import argparse
import json

from autopeft.cli._remote import client as _client
from autopeft.cli._remote import format_table, remote_options
from autopeft.cli._remote import run as _run


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dataset", help="upload and manage your datasets on a controller")
    common = remote_options()
    dsub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    p = dsub.add_parser(
        "upload", parents=[common], help="upload a CSV / TSV / JSONL file; prints its id"
    )
    p.add_argument("file")
    p.add_argument("--name", help="default: the file name")
    p.add_argument(
        "--text-column", help="text column (default text), or two comma-separated for pairs"
    )
    p.add_argument("--label-column", help="label column (default label)")
    p.add_argument("--format", choices=["csv", "tsv", "jsonl"], help="default: from the suffix")
    p.add_argument("--encoding", help="default utf-8")
    p.add_argument(
        "--kind",
        choices=["classification", "sft"],
        help="sft: JSONL of prompt / completion or messages records, for a causal_lm study "
        "(default: detected from the first record)",
    )
    p.add_argument("--json", action="store_true", help="print the stored dataset as JSON")
    p.set_defaults(func=_cmd_upload)
    dsub.add_parser("list", parents=[common], help="your datasets").set_defaults(func=_cmd_list)
    p = dsub.add_parser("show", parents=[common], help="one dataset as JSON (schema, labels, hash)")
    p.add_argument("id", type=int)
    p.set_defaults(func=_cmd_show)
    p = dsub.add_parser("rm", parents=[common], help="delete a dataset")
    p.add_argument("id", type=int)
    p.set_defaults(func=_cmd_rm)


@_run
def _cmd_upload(args: argparse.Namespace) -> int:
    ds = _client(args).upload_dataset(
        args.file,
        name=args.name,
        text_column=args.text_column,
        label_column=args.label_column,
        format=args.format,
        encoding=args.encoding,
        kind=args.kind,
    )
    if args.json:
        print(json.dumps(ds, indent=1, default=str))
    else:
        if ds.get("kind") == "sft":
            what = f"SFT ({', '.join(ds['columns'])}), for a causal_lm study"
        else:
            what = "labels " + ", ".join(f"{k}: {v}" for k, v in ds["labels"].items())
        print(
            f"dataset {ds['id']}: {ds['name']}  {ds['rows']} rows  {what}  "
            f'(use "dataset_id": {ds["id"]} in a workload)'
        )
    return 0


@_run
def _cmd_list(args: argparse.Namespace) -> int:
    rows = [
        [
            d["id"],
            d["name"],
            d["format"],
            d.get("kind", "classification"),
            d["rows"],
            len(d["labels"]),
            d["size_bytes"],
            d["sha256"][:12],
            str(d["created_at"])[:16],
        ]
        for d in _client(args).datasets()
    ]
    print(
        format_table(
            rows, ["id", "name", "format", "kind", "rows", "labels", "bytes", "sha256", "created"]
        )
    )
    return 0


@_run
def _cmd_show(args: argparse.Namespace) -> int:
    print(json.dumps(_client(args).dataset(args.id), indent=1, default=str))
    return 0


@_run
def _cmd_rm(args: argparse.Namespace) -> int:
    _client(args).delete_dataset(args.id)
    print(f"deleted dataset {args.id}")
    return 0
