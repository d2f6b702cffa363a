"""jupyter-modeldeploy: serve models from Jupyter with authenticated OpenAI-compatible endpoints."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server_ext import ModelDeployApp

    return [{"module": "jupyter_modeldeploy", "app": ModelDeployApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-modeldeploy"}]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext jupyter_modeldeploy`: registers the `%deploy` magic."""
    from .magics import register

    register(ipython)
