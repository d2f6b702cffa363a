"""Notebook UI over the REST API: launch form, deployment dashboard, endpoints table, single live charts.

`chart("name", "tokens_per_s")` shows one live chart of a deployment anywhere (notebook, Voilà).

Everything here talks to the server extension through `ModelDeployClient`, so it works
the same in a notebook and in Voilà.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Dashboard", "DashboardApp", "EndpointsTable", "LaunchForm", "LiveChart", "SchemaForm", "chart"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not pull bqplot in for the plain form.
    if name == "SchemaForm":
        from .schema_form import SchemaForm

        return SchemaForm
    if name == "LaunchForm":
        from .launch_form import LaunchForm

        return LaunchForm
    if name in ("chart", "LiveChart"):
        from . import charts

        return getattr(charts, name)
    if name == "Dashboard":
        from .dashboard import Dashboard

        return Dashboard
    if name in ("EndpointsTable", "DashboardApp"):
        from . import endpoints

        return getattr(endpoints, name)
    raise AttributeError(name)
