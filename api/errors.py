"""One error envelope for every 4xx / 5xx: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autopeft.api.admission import retry_headers
from autopeft.api.limits import LimitError
from autopeft.errors import InvalidConfig

log = logging.getLogger("autopeft.api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "overloaded",
}
#: what a client told 503 waits before it tries again
RETRY_AFTER_S = 2


class ApiError(Exception):
    """An error a handler or service raises on purpose; rendered in the envelope."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} not found")


def envelope(
    status: int, code: str, message: str, field: str | None = None, headers=None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=headers,
    )


def _field_of(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return envelope(err.status, err.code, err.message, err.field, headers)

    @app.exception_handler(InvalidConfig)
    async def _invalid_config(_request: Request, err: InvalidConfig):
        return envelope(422, "invalid_spec", str(err), err.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, err: RequestValidationError):
        errors = err.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        cause = (first.get("ctx") or {}).get("error")
        if (
            isinstance(cause, LimitError) and cause.path
        ):  # a bounded free-form field: name the inner path
            field = f"{field}.{cause.path}" if field else cause.path
        message = "; ".join(
            f"{_field_of(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in errors[:5]
        )
        return envelope(422, "invalid_request", message[:2000], field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, err: StarletteHTTPException):
        code = _STATUS_CODES.get(err.status_code, "error")
        return envelope(err.status_code, code, str(err.detail), None, getattr(err, "headers", None))

    from sqlalchemy.exc import TimeoutError as PoolTimeout

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_request: Request, err: PoolTimeout):
        # every database connection stayed busy for the pool's timeout: capacity, not a bug
        log.warning("database pool exhausted: %s", err)
        return envelope(
            503,
            "overloaded",
            "the database is at capacity; retry after the Retry-After seconds",
            None,
            retry_headers(RETRY_AFTER_S),
        )

    @app.exception_handler(Exception)
    async def _unhandled(_request: Request, err: Exception):
        log.exception("unhandled error")
        return envelope(500, "internal_error", f"internal error: {type(err).__name__}")
