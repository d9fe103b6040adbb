"""/api/v1/datasets: upload (multipart, streamed to disk), list, show, delete — owner-only."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from autopeft.api.deps import CurrentUser, StateDep
from autopeft.api.errors import ApiError
from autopeft.api.limits import check_name
from autopeft.api.routers._common import ERRORS
from autopeft.api.schemas import DatasetId, DatasetList, DatasetPublic, ErrorEnvelope
from autopeft.api.services import uploads
from autopeft.api.services.datasets import dataset_public

router = APIRouter(
    prefix="/datasets",
    tags=["datasets"],
    responses=ERRORS,
)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the CSV / TSV / JSONL file",
                        },
                        "name": {
                            "type": "string",
                            "maxLength": 200,
                            "description": "default: the file name",
                        },
                        "text_column": {
                            "type": "string",
                            "description": "text column (default text), or two names "
                            "separated by a comma for sentence pairs",
                        },
                        "label_column": {
                            "type": "string",
                            "description": "label column (default label)",
                        },
                        "format": {
                            "type": "string",
                            "enum": ["csv", "tsv", "jsonl"],
                            "description": "default: from the suffix",
                        },
                        "encoding": {"type": "string", "description": "default utf-8"},
                        "kind": {
                            "type": "string",
                            "enum": ["classification", "sft"],
                            "description": "classification (text and label columns) or sft "
                            "(JSONL of prompt / completion or chat messages records, for a "
                            "causal_lm study); default: sft when the first JSONL record has "
                            "prompt / completion or messages",
                        },
                    },
                }
            }
        },
    }
}
_LINKS = {
    op: {"operationId": op_id, "parameters": {"dataset_id": "$response.body#/id"}}
    for op, op_id in (("GetDataset", "get_dataset"), ("DeleteDataset", "delete_dataset"))
}


def _checked(
    state, user_id: int, received: uploads.Received, fields: dict[str, str]
) -> tuple[dict, str]:
    """The upload's schema and name, checked (the quota first, in a short session of its own; the
    file's read-through with none held)."""
    fmt = uploads.upload_format(received.filename or "upload", fields.get("format"))
    kind = uploads.upload_kind(fields.get("kind"))
    texts = uploads.text_columns(fields.get("text_column"))
    label = (fields.get("label_column") or "label").strip()
    encoding = (fields.get("encoding") or "utf-8").strip()
    name = (fields.get("name") or received.filename or f"upload.{fmt}").strip()[:200]
    try:
        check_name(name, "name")
        check_name(received.filename or "upload", "the file name")
    except ValueError as err:
        raise ApiError(422, "invalid_dataset", str(err), "name") from None
    with state.db.read() as session:
        state.datasets.check_quota(session, user_id, received.size)  # before reading it through
    if kind is None and not {"text_column", "label_column"} & set(fields):
        kind = uploads.detect_kind(received.path, fmt, encoding)
    if kind == "sft":
        for key in ("text_column", "label_column"):
            if key in fields:
                raise ApiError(
                    422,
                    "invalid_dataset",
                    f"{key} is not used by an SFT dataset (its records have 'prompt' and "
                    "'completion', or 'messages')",
                    key,
                )
        schema = uploads.check_sft_file(received.path, received.filename or "upload", fmt, encoding)
    else:
        schema = uploads.check_file(
            received.path, received.filename or "upload", fmt, encoding, texts, label
        )
    return schema, name


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    operation_id="upload_dataset",
    openapi_extra=_UPLOAD_BODY,
    responses={
        201: {"description": "the stored dataset", "links": _LINKS},
        403: {"model": ErrorEnvelope, "description": "over your stored-data quota"},
        413: {"model": ErrorEnvelope, "description": "larger than AUTOPEFT_MAX_UPLOAD_BYTES"},
        415: {"model": ErrorEnvelope, "description": "not multipart/form-data"},
    },
)
async def upload_dataset(request: Request, user: CurrentUser, state: StateDep):
    """Upload a CSV / TSV / JSONL file (multipart field ``file``). It is streamed to disk (never held in
    memory), refused above the size limit, and checked before it is stored: encoding, columns, a text
    and a label in every row, two or more labels; errors name the row and the column. An SFT dataset
    (``kind=sft``, detected for a JSONL file whose first record has ``prompt`` / ``completion`` or
    ``messages``) is checked record by record instead, its errors naming the row and the field
    (``messages.2.role``). Use it in a study as ``workload.dataset_id`` (an SFT dataset in a
    ``causal_lm`` study only)."""
    store = state.datasets
    received = await uploads.receive_multipart(request, store.incoming, store.max_upload_bytes)
    try:

        def work():
            schema, name = _checked(state, user.id, received, received.fields)
            with state.db.write() as session:
                ds = store.add(
                    session,
                    user.id,
                    name,
                    received.filename or name,
                    schema,
                    received.size,
                    received.sha256,
                    received.path,
                )
                return dataset_public(ds)

        return await run_in_threadpool(work)
    finally:
        if received.path is not None:
            received.path.unlink(missing_ok=True)  # moved into place on success


@router.get("", response_model=DatasetList, operation_id="list_datasets")
def list_datasets(user: CurrentUser, state: StateDep):
    with state.db.read() as session:
        return {"datasets": state.datasets.list(session, user.id)}


@router.get("/{dataset_id}", response_model=DatasetPublic, operation_id="get_dataset")
def get_dataset(dataset_id: DatasetId, user: CurrentUser, state: StateDep):
    """Schema (columns, text and label columns), rows per label, size and content hash."""
    with state.db.read() as session:
        return dataset_public(state.datasets.get(session, user.id, dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    operation_id="delete_dataset",
    responses={409: {"model": ErrorEnvelope, "description": "a running study uses it"}},
)
def delete_dataset(dataset_id: DatasetId, user: CurrentUser, state: StateDep):
    with state.db.write() as session:
        path = state.datasets.delete(session, user.id, dataset_id)
    path.unlink(missing_ok=True)
    state.datasets.forget_cache(user.id)  # its tokenised forms among them
    return Response(status_code=204)
