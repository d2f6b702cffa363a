"""Engines: one module per deployment kind, each turning a config into a launch plan."""

from __future__ import annotations

import importlib

from .base import ChartedMetrics, Engine, EngineAddress, EngineSettings, EngineUnavailable, LaunchContext, LaunchPlan, ModelLimits

_MODULES = {"llamacpp": "llamacpp", "llm": "llm", "embedding": "embedding"}


def get_engine(kind: str) -> Engine:
    """The engine of a deployment kind (imported on first use: engines stay light to import)."""
    module = importlib.import_module(f".{_MODULES[kind]}", __name__)
    return module.ENGINE


__all__ = [
    "ChartedMetrics", "Engine", "EngineAddress", "EngineSettings", "EngineUnavailable", "LaunchContext", "LaunchPlan",
    "ModelLimits", "get_engine",
]
