"""The Voilà dashboard that ships with the package, served by the server wherever it was installed.

`notebooks/dashboard.ipynb` is package data in the wheel (`jupyter_modeldeploy/notebooks/`)
and sits beside the package in a checkout; `dashboard_notebook()` finds it either way.
`/modeldeploy/dashboard` renders it with Voilà (when Voilà's server extension runs here),
so a pip-installed user and a checkout get the same page; `/api/modeldeploy/dashboard`
says whether and where it is served, for the Lab panel.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from tornado import web

from .handlers import BaseHandler

NOTEBOOK = "dashboard.ipynb"
ROUTE = "modeldeploy/dashboard"


def dashboard_notebook() -> Path | None:
    """The dashboard notebook: package data in a wheel, else the checkout's `notebooks/` folder."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "notebooks" / NOTEBOOK, package.parent / "notebooks" / NOTEBOOK):
        if candidate.is_file():
            return candidate
    return None


def voila_render_kwargs(application: web.Application) -> dict[str, Any] | None:
    """The arguments Voilà's server extension gave its own render handler (None when it is not loaded)."""
    try:
        from voila.tornado.handler import TornadoVoilaHandler
    except ImportError:
        return None

    def search(router: Any) -> dict[str, Any] | None:
        for rule in getattr(router, "rules", []):
            target = rule.target
            if isinstance(target, type) and issubclass(target, TornadoVoilaHandler) and target is not _handler_class():
                return dict(rule.target_kwargs)
            found = search(target)
            if found is not None:
                return found
        return None

    return search(application.default_router) or search(application.wildcard_router)


@cache
def _contents_manager(root: str) -> Any:
    from jupyter_server.services.contents.filemanager import FileContentsManager

    return FileContentsManager(root_dir=root)


@cache
def _handler_class() -> type[web.RequestHandler] | None:
    """Voilà's render handler, for the packaged notebook (None without Voilà)."""
    try:
        from voila.tornado.handler import TornadoVoilaHandler
    except ImportError:
        return None

    class PackagedDashboardHandler(TornadoVoilaHandler):
        """Voilà rendering the packaged dashboard notebook, read from its own folder."""

        def initialize(self, **kwargs: Any) -> None:
            self._notebook = dashboard_notebook()
            voila = voila_render_kwargs(self.application)
            self._voila_loaded = voila is not None and self._notebook is not None
            if not self._voila_loaded:
                return
            super().initialize(**voila, notebook_path=NOTEBOOK)

        @property
        def contents_manager(self) -> Any:
            if self._notebook is None:
                return super().contents_manager
            return _contents_manager(str(self._notebook.parent))

        @web.authenticated
        async def get(self, path: str | None = None) -> None:
            if not self._voila_loaded:
                raise web.HTTPError(404, "the dashboard needs Voilà's server extension (pip install voila)")
            await super().get(path=None)

    return PackagedDashboardHandler


def dashboard_info(base_url: str, application: web.Application) -> dict[str, Any]:
    """Whether the packaged dashboard is served here, at which URL, from which file."""
    notebook = dashboard_notebook()
    served = notebook is not None and _handler_class() is not None and voila_render_kwargs(application) is not None
    return {
        "voila": served,
        "url": f"{base_url.rstrip('/')}/{ROUTE}" if served else None,
        "notebook": str(notebook) if notebook else None,
        "query": {"deployment": "a deployment's id or name", "theme": "light or dark"},
    }


class DashboardInfoHandler(BaseHandler):
    """GET where the packaged Voilà dashboard is served (`url`; `voila` false when it is not)."""

    @web.authenticated
    async def get(self) -> None:
        self.write_json(dashboard_info(self.base_url, self.application))


def dashboard_handlers(prefix: str) -> list[tuple[str, Any]]:
    """The dashboard page (when Voilà is installed) and its whereabouts under `prefix`."""
    handlers: list[tuple[str, Any]] = [(rf"{prefix}/dashboard", DashboardInfoHandler)]
    page = _handler_class()
    if page is not None:
        handlers.append((rf"/{ROUTE}", page))
    return handlers
