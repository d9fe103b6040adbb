"""The web dashboard: a static single-page app served by the controller.

``mount_dashboard(app)`` serves ``static/index.html`` at ``/``, the assets under
``/static/...`` and plotly.js at ``/static/vendor/plotly.min.js``. plotly.js is not kept in
this repository (it is ~4.7 MB): it is served straight from the installed PyPI package
``plotly`` (``plotly/package_data/plotly.min.js``), so nothing is fetched from a CDN. Without
that package the page still loads and says which package is missing.

The app reads the REST API only (``/api/v1``, bearer token kept in ``localStorage``). One
read-only file is generated here, ``/static/meta.json``: the space presets and optimiser
names installed with this build, for the create-study form.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("autopeft.dashboards")


def plotly_js_path() -> Path | None:
    """``plotly.min.js`` of the installed ``plotly`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None


def dashboard_meta() -> dict[str, Any]:
    """Presets (name, description, whether per-layer) and optimiser names for the create form."""
    import yaml

    from autopeft.optim import OPTIMIZERS
    from autopeft.space.presets import list_presets, preset_path

    presets = []
    for name in list_presets():
        try:
            data = yaml.safe_load(preset_path(name).read_text()) or {}
        except (
            OSError,
            yaml.YAMLError,
        ) as err:  # shown, not hidden: the form lists it without details
            log.warning("dashboard: could not read preset %s: %s", name, err)
            data = {}
        peft = data.get("peft") or {}
        per_layer = (
            bool((peft.get("layers") or {}).get("search"))
            if isinstance(peft.get("layers"), dict)
            else False
        )
        for method in peft.values():
            if isinstance(method, dict):
                per_layer = per_layer or any(
                    isinstance(v, dict) and v.get("per_layer") for v in method.values()
                )
        presets.append(
            {"name": name, "description": data.get("description", ""), "per_layer": per_layer}
        )
    return {
        "presets": presets,
        "optimizers": list(OPTIMIZERS),
        "early_stopping": ["asha", "moasha"],
        "plotly": plotly_js_path() is not None,
    }


def mount_dashboard(app) -> None:
    """Serve the dashboard on ``app`` (a FastAPI app): ``/`` and ``/static/...``."""
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
    from fastapi.staticfiles import StaticFiles

    def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    def plotly_js():
        path = plotly_js_path()
        if path is None:
            return PlainTextResponse(
                "plotly.js is not installed: pip install plotly (the dashboard serves "
                "plotly/package_data/plotly.min.js from it)",
                status_code=404,
            )
        return FileResponse(
            path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    meta_cache: dict[str, Any] = {}

    def meta():
        if not meta_cache:
            meta_cache.update(dashboard_meta())
        return JSONResponse(meta_cache)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/static/vendor/plotly.min.js", plotly_js, methods=["GET"], include_in_schema=False
    )
    app.add_api_route("/static/meta.json", meta, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")


__all__ = ["mount_dashboard", "plotly_js_path", "dashboard_meta", "STATIC_DIR"]
