"""Running the controller with uvicorn (``autopeft serve``, or ``python -m autopeft.api.server``)."""

from __future__ import annotations

import logging
import sys

from autopeft.api.settings import Settings, check_bind


def serve(settings: Settings) -> None:
    import uvicorn

    from autopeft.api.app import create_app

    check_bind(settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def app_from_env():
    """An ASGI app built from the environment, for ``uvicorn --factory autopeft.api.server:app_from_env``."""
    from autopeft.api.app import create_app

    settings = Settings()
    check_bind(settings)
    return create_app(settings)


if __name__ == "__main__":  # pragma: no cover
    try:
        serve(Settings())
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
