"""Running the controller with uvicorn (``autopeft serve``, or ``python -m autopeft.api.server``).

The listening socket is bound before anything else starts. uvicorn on its own runs the app's
lifespan first (migrations, the executor, a local Ray, the scheduler) and binds afterwards, so:
a port already in use was found only after a scheduler had started on the database; and a local
Ray, which opens many ports of its own while it starts, could take the port in between.
"""

from __future__ import annotations

import logging
import socket
import sys

from autopeft.api.settings import Settings, check_bind


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``ValueError`` naming the address when it cannot be)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ValueError(
            f"port: cannot listen on {host}:{port}: {err.strerror or err} (errno {err.errno})"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    import uvicorn

    check_bind(settings)
    sock = listen(settings.host, settings.port)
    try:
        from autopeft.api.app import create_app

        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


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
