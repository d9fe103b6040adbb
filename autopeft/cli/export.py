"""``autopeft study export``: one trial's adapter, the trials table (CSV / Parquet), the Pareto
trials' adapters as one zip, the validation front as JSON (for a warm start elsewhere)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autopeft.cli._remote import client as _client
from autopeft.cli._remote import run as _run


@_run
def _cmd_export(args: argparse.Namespace) -> int:
    if (args.trial is None) != (args.dir is None):
        print("error: give both TRIAL and DIR (one trial's adapter), or neither", file=sys.stderr)
        return 2
    if args.trial is None and not (args.output or args.adapters or args.front):
        print(
            "error: nothing to export: give TRIAL DIR, --output FILE, --adapters FILE.zip or "
            "--front FILE.json",
            file=sys.stderr,
        )
        return 2
    if getattr(args, "merged", False) and args.trial is None:
        print("error: --merged needs TRIAL DIR", file=sys.stderr)
        return 2
    if args.format and not args.output:
        print("error: --format needs --output FILE", file=sys.stderr)
        return 2
    study = _client(args).study(args.id)
    if args.trial is not None:
        merged = getattr(args, "merged", False)
        path = study.export(args.trial, args.dir, merged=merged)
        what = "merged model" if merged else "adapter"
        print(f"trial {args.trial}'s {what} exported to {path}")
    if args.output:
        fmt = args.format or ("parquet" if args.output.endswith((".parquet", ".pq")) else "csv")
        n = export_table(study, args.output, fmt)
        print(f"{n} trials of study {study.id} written to {args.output} ({fmt})")
    if args.front:
        path = study.export_front(args.front)
        print(f"the front of study {study.id} written to {path}")
    if args.adapters:
        zipped, missing = export_pareto_adapters(study, args.adapters)
        print(
            f"{len(zipped)} Pareto adapters of study {study.id} written to {args.adapters}"
            + (f"; no adapter for trials {missing}" if missing else "")
        )
    return 0


def export_table(study, path: str | Path, fmt: str) -> int:
    """The study's trials (``Study.to_dataframe()``) as CSV or Parquet; returns the row count."""
    df = study.to_dataframe()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return len(df)


def export_pareto_adapters(study, path: str | Path) -> tuple[list[int], list[int]]:
    """One zip with ``trial-<number>/...`` (each Pareto trial's adapter, as served by
    ``GET /trials/{id}/adapter``) and ``pareto.json`` (ids, numbers, values, configs, folders).
    Returns (trial ids zipped, trial ids without an adapter); fails if none has one."""
    import io
    import zipfile

    from autopeft.client import ApiError

    pareto = study.pareto()
    zipped, missing, manifest = [], [], []
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for t in sorted(pareto, key=lambda t: t["number"]):
            folder = f"trial-{t['number']:05d}"
            try:
                blob = study._client.request(
                    "GET", f"/api/v1/trials/{int(t['id'])}/adapter"
                ).content
            except ApiError as err:
                if err.status != 404:
                    raise
                missing.append(t["id"])
                folder = None
            else:
                with zipfile.ZipFile(io.BytesIO(blob)) as src:
                    for info in src.infolist():
                        name = info.filename
                        if name.startswith("/") or ".." in Path(name).parts:
                            raise ApiError(500, "bad_archive", f"unsafe path in archive: {name}")
                        if not info.is_dir():
                            out.writestr(f"{folder}/{name}", src.read(info))
                zipped.append(t["id"])
            manifest.append(
                {
                    "id": t["id"],
                    "number": t["number"],
                    "values": t.get("values"),
                    "config": t.get("config"),
                    "adapter": folder,
                }
            )
        out.writestr(
            "pareto.json",
            json.dumps(
                {
                    "study": study.id,
                    "name": study.name,
                    "objectives": study.spec.get("objectives"),
                    "trials": manifest,
                },
                indent=1,
                default=str,
            ),
        )
    if not zipped:
        tmp.unlink()
        raise ApiError(
            404,
            "not_found",
            f"no Pareto trial of study {study.id} has an adapter (trials {missing or 'none'})",
        )
    tmp.replace(target)
    return zipped, missing
