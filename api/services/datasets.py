"""Uploaded datasets: storage, ownership, quotas, and their use by studies and trials.

A dataset is stored as ``<datasets dir>/<user id>/<dataset id>.<format>`` after the streamed
upload was checked (``services.uploads``). Only its owner sees it (others get 404). A study refers
to one by ``workload.dataset_id``: the spec is validated against the stored file (the workload
takes the dataset's format, encoding, columns and label order unless it gives its own; an SFT
dataset, of prompt / completion or chat messages records, only a ``causal_lm`` workload and a
classification one only a ``classification`` workload), and stored as ``{"dataset_id": N, "dataset": "upload:N", ...}`` — never with a server path.

At trial time :meth:`DatasetStore.trial_workload` turns that into the workload a worker runs (the
stored file's path) plus a description of the file (``TrialSpec.data_file``) that the Ray
executor ships through the object store to nodes that do not share the controller's disk.

The trials' tokenised-data cache is the server's too (``cache_root``; a study cannot name one):
entries are keyed by a content hash of the data, tokenizer and length, so every study of the same
data shares them. Those of a built-in or server-path dataset are kept in ``cache_root``; those of
an upload under ``cache_root/users/<user id>``, counted in its owner's stored bytes and removed
with the owner's datasets.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autopeft.api.errors import ApiError, not_found
from autopeft.api.models import Dataset, Study, columns
from autopeft.errors import InvalidConfig

UPLOAD_PREFIX = "upload:"


def dataset_public(ds: Dataset) -> dict[str, Any]:
    return {
        **columns(ds, "id", "name", "filename", "format", "encoding", "size_bytes", "sha256"),
        **columns(ds, "rows", "columns", "text_column", "label_column"),
        "labels": ds.label_counts,
        "kind": ds.kind,
        "created_at": ds.created_at,
    }


class DatasetStore:
    def __init__(
        self,
        root: Path,
        max_upload_bytes: int,
        max_stored_bytes_per_user: int,
        cache_root: Path | None = None,
    ):
        self.root = Path(root).expanduser().resolve()
        self.cache_root = Path(cache_root or self.root.parent / "cache").expanduser().resolve()
        self.max_upload_bytes = max_upload_bytes
        self.max_stored = max_stored_bytes_per_user or None
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        for stale in self.incoming.glob("*.part"):  # uploads cut off by a restart
            stale.unlink(missing_ok=True)

    def path_of(self, ds: Dataset) -> Path:
        return self.root / str(ds.user_id) / f"{ds.id}.{ds.format}"

    # -- queries ---------------------------------------------------------------------------------
    def get(self, session: Session, user_id: int, dataset_id: int) -> Dataset:
        ds = session.get(Dataset, dataset_id)
        if ds is None or ds.user_id != user_id:  # others' datasets do not exist for you
            raise not_found("dataset", dataset_id)
        return ds

    def list(self, session: Session, user_id: int) -> list[dict[str, Any]]:
        rows = session.scalars(
            select(Dataset).where(Dataset.user_id == user_id).order_by(Dataset.id)
        ).all()
        return [dataset_public(d) for d in rows]

    def user_cache(self, user_id: int) -> Path:
        """Where the trials cache the tokenised forms of ``user_id``'s uploads."""
        return self.cache_root / "users" / str(int(user_id))

    def cache_bytes(self, user_id: int) -> int:
        total = 0
        for path in self.user_cache(user_id).rglob("*"):
            try:
                total += path.stat().st_size if path.is_file() else 0
            except OSError:  # removed meanwhile
                pass
        return total

    def stored_bytes(self, session: Session, user_id: int) -> int:
        """What ``user_id`` keeps on the server: their uploads and their trials' cache of them."""
        uploads = session.scalar(
            select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.user_id == user_id)
        )
        return int(uploads or 0) + self.cache_bytes(user_id)

    def check_quota(self, session: Session, user_id: int, size: int) -> None:
        if self.max_stored is None:
            return
        used = self.stored_bytes(session, user_id)
        if used + size > self.max_stored:
            raise ApiError(
                403,
                "quota_exceeded",
                f"storing this dataset ({size} bytes) would take your data to "
                f"{used + size} bytes (your uploads and the trials' cache of them), above your "
                f"limit of {self.max_stored} (AUTOPEFT_MAX_STORED_BYTES_PER_USER); delete datasets "
                "you no longer need",
                "file",
            )

    # -- changes ---------------------------------------------------------------------------------
    def add(
        self,
        session: Session,
        user_id: int,
        name: str,
        filename: str,
        schema,
        size: int,
        sha256: str,
        tmp: Path,
    ) -> Dataset:
        """Store a checked upload (moves ``tmp`` into place); the caller commits."""
        self.check_quota(session, user_id, size)
        ds = Dataset(
            user_id=user_id,
            name=name,
            filename=filename,
            format=schema.format,
            encoding=schema.encoding,
            size_bytes=size,
            sha256=sha256,
            rows=schema.rows,
            columns=schema.columns,
            text_column=schema.text_column,
            label_column=schema.label_column,
            label_counts=schema.label_counts,
            kind=schema.kind,
        )
        session.add(ds)
        session.flush()
        target = self.path_of(ds)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        return ds

    def delete(self, session: Session, user_id: int, dataset_id: int) -> Path:
        """Delete the row (the caller commits, then removes the returned file). 409 while a running
        study uses it."""
        ds = self.get(session, user_id, dataset_id)
        running = session.scalars(
            select(Study.id)
            .where(Study.dataset_id == ds.id, Study.state == "running")
            .order_by(Study.id)
        ).all()
        if running:
            raise ApiError(
                409,
                "conflict",
                f"dataset {dataset_id} is used by running stud"
                f"{'y' if len(running) == 1 else 'ies'} {', '.join(map(str, running))}; stop "
                f"{'it' if len(running) == 1 else 'them'} first",
            )
        path = self.path_of(ds)
        session.delete(ds)
        return path

    def forget_cache(self, user_id: int) -> None:
        """Drop the trials' cache of ``user_id``'s uploads (rebuilt when a trial needs it)."""
        shutil.rmtree(self.user_cache(user_id), ignore_errors=True)

    def remove_user_files(self, user_id: int) -> None:
        shutil.rmtree(self.root / str(user_id), ignore_errors=True)
        self.forget_cache(user_id)

    # -- studies and trials ------------------------------------------------------------------------
    def resolve_for_validation(
        self, session: Session, user_id: int, workload: dict[str, Any]
    ) -> tuple[dict[str, Any], Dataset | None]:
        """``workload`` with an uploaded dataset's stored path and schema filled in (for
        ``validate_workload``), and the dataset; unchanged and None without ``dataset_id``."""
        if workload.get("kind") != "peft" or "dataset_id" not in workload:
            return workload, None
        ref = workload["dataset_id"]
        if isinstance(ref, bool) or not isinstance(ref, int) or not 1 <= ref <= 2**31 - 1:
            raise InvalidConfig(
                f"workload.dataset_id must be the id of one of your datasets, got {ref!r}",
                "workload.dataset_id",
            )
        ds = session.get(Dataset, ref)
        if ds is None or ds.user_id != user_id:
            raise InvalidConfig(
                f"dataset {ref} not found among your datasets (GET /api/v1/datasets)",
                "workload.dataset_id",
            )
        given = workload.get("dataset")
        if given is not None and given != f"{UPLOAD_PREFIX}{ds.id}":
            raise InvalidConfig(
                "give workload.dataset_id or workload.dataset, not both", "workload.dataset"
            )
        task = workload.get("task") or "classification"
        if (ds.kind == "sft") != (task == "causal_lm"):
            what = (
                "an SFT dataset (prompt / completion or chat messages records): only a causal_lm "
                "study trains on it"
                if ds.kind == "sft"
                else "a classification dataset (text and label columns); a causal_lm study trains "
                "on an SFT dataset (upload JSONL of prompt / completion or messages records)"
            )
            raise InvalidConfig(
                f"dataset {ds.id} is {what}; this workload's task is {task!r}",
                "workload.dataset_id",
            )
        for key, value in (("format", ds.format), ("encoding", ds.encoding)):
            if workload.get(key) not in (None, value):
                raise InvalidConfig(
                    f"dataset {ds.id} is {value}; workload.{key} {workload[key]!r} would not "
                    f"read it",
                    f"workload.{key}",
                )
        out = {k: v for k, v in workload.items() if k != "dataset_id"}
        out.update(dataset=str(self.path_of(ds)), format=ds.format, encoding=ds.encoding)
        if ds.kind == "sft":  # its fields are the trials' own: no columns, no labels to fill in
            return out, ds
        out.setdefault(
            "text_column", ds.text_column[0] if len(ds.text_column) == 1 else list(ds.text_column)
        )
        out.setdefault("label_column", ds.label_column)
        if out.get("labels") is None and out["label_column"] == ds.label_column:
            out["labels"] = list(
                ds.label_counts
            )  # the order the trials would infer; makes num_labels known
        return out, ds

    def stored_workload(self, normalised: dict[str, Any], ds: Dataset | None) -> dict[str, Any]:
        """What the study's spec keeps: the dataset by id, never its server path."""
        if ds is None:
            return normalised
        return {**normalised, "dataset": f"{UPLOAD_PREFIX}{ds.id}", "dataset_id": ds.id}

    def trial_workload(
        self, db, workload: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The workload a worker runs and the data file to ship (None: nothing to ship); a peft
        workload's cache is the server's (the uploader's part of it for an upload)."""
        if workload.get("kind") == "peft":
            workload = {**workload, "cache_dir": str(self.cache_root)}
        if "dataset_id" not in workload:
            return workload, None
        with db.read() as session:
            ds = session.get(Dataset, int(workload["dataset_id"]))
        if ds is None:
            raise RuntimeError(
                f"dataset {workload['dataset_id']} was deleted; upload it again and create a new "
                "study"
            )
        path = self.path_of(ds)
        out = {k: v for k, v in workload.items() if k != "dataset_id"}
        out["dataset"] = str(path)
        out["cache_dir"] = str(self.user_cache(ds.user_id))
        return out, {
            "path": str(path),
            "sha256": ds.sha256,
            "size": ds.size_bytes,
            "suffix": f".{ds.format}",
        }

    def export_workload(self, db, workload: dict[str, Any]) -> dict[str, Any]:
        """The workload to rebuild a trial's model for an adapter export. The data itself is not read
        (the labels are in the workload); when the upload was deleted since, a two-line stand-in with
        the same labels takes its place."""
        if "dataset_id" not in workload:
            return workload
        try:
            return self.trial_workload(db, workload)[0]
        except RuntimeError:
            pass
        labels = [str(v) for v in workload.get("labels") or []]
        stub = (
            self.incoming / f"export-{int(workload['dataset_id'])}.{workload.get('format', 'csv')}"
        )
        if workload.get("task") == "causal_lm":  # an SFT upload: one prompt / completion record
            stub.write_text('{"prompt": "x", "completion": " x"}\n')
            return {
                **{k: v for k, v in workload.items() if k != "dataset_id"},
                "dataset": str(stub),
            }
        texts = workload.get("text_column") or "text"
        texts = [texts] if isinstance(texts, str) else list(texts)
        label = workload.get("label_column") or "label"
        if workload.get("format") == "jsonl":
            import json

            stub.write_text(
                "".join(json.dumps({**{t: "x" for t in texts}, label: v}) + "\n" for v in labels)
            )
        else:
            import csv
            import io

            buf = io.StringIO()
            writer = csv.writer(buf, delimiter="\t" if workload.get("format") == "tsv" else ",")
            writer.writerow([*texts, label])
            writer.writerows([["x"] * len(texts) + [v] for v in labels])
            stub.write_text(buf.getvalue(), encoding=workload.get("encoding") or "utf-8")
        out = {k: v for k, v in workload.items() if k != "dataset_id"}
        out["dataset"] = str(stub)
        return out
