"""The Jupyter server extension: REST API, gateway routes and the supervisor's lifetime."""

from __future__ import annotations

from .app import ModelDeployApp

__all__ = ["ModelDeployApp"]
