"""What the routers of ``/api/v1`` share: the error answers every route documents, and OpenAPI
links from a response to the operations that take one of its ids."""

from __future__ import annotations

from typing import Any

from autopeft.api.schemas import ErrorEnvelope

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope},
    404: {"model": ErrorEnvelope},
    422: {"model": ErrorEnvelope},
}


def links(param: str, expression: str, *operation_ids: str) -> dict[str, dict[str, Any]]:
    """OpenAPI links named ``GetStudy`` for ``get_study`` etc., each passing ``expression`` (a
    runtime expression into the response) as the operation's ``param``. Stateful API tests
    (schemathesis) follow them from a created object to its other operations."""
    return {
        "".join(word.capitalize() for word in op.split("_")): {
            "operationId": op,
            "parameters": {param: expression},
        }
        for op in operation_ids
    }
