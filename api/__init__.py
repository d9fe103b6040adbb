"""The controller: FastAPI app, SQL store, scheduler and auth (installed as ``autopeft.api``).

``create_app(settings)`` builds the application; ``autopeft serve`` runs it. Importing this
package is cheap; FastAPI and SQLAlchemy load with the submodules that need them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from autopeft.api.app import create_app

        return create_app
    if name == "Settings":
        from autopeft.api.settings import Settings

        return Settings
    raise AttributeError(name)
