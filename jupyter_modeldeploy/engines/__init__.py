"""Engines: one module per deployment kind, each turning a config into a launch plan."""

from __future__ import annotations

import importlib

from .base import (
    ChartedMetrics,
    Engine,
    EngineAddress,
    EngineSettings,
    EngineUnavailable,
    FitInputs,
    LaunchContext,
    LaunchPlan,
    MemoryNeed,
    ModelFileUnreadable,
    ModelLimits,
    unknown_fit,
)

_MODULES = {"llamacpp": "llamacpp", "llm": "llm", "embedding": "embedding"}
_REGISTERED: dict[str, Engine] = {}  # engines of kinds added at run time (`register_engine`)


def get_engine(kind: str) -> Engine:
    """The engine of a deployment kind (imported on first use: engines stay light to import)."""
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    module = importlib.import_module(f".{_MODULES[kind]}", __name__)
    return module.ENGINE


def register_engine(engine: Engine) -> None:
    """Add the engine of a new kind (with its config model, `config.register_kind`)."""
    _REGISTERED[engine.kind] = engine


def unregister_engine(kind: str) -> None:
    """Take an engine added by `register_engine` away again."""
    _REGISTERED.pop(kind, None)


__all__ = [
    "ChartedMetrics", "Engine", "EngineAddress", "EngineSettings", "EngineUnavailable", "FitInputs", "LaunchContext",
    "LaunchPlan", "MemoryNeed", "ModelFileUnreadable", "ModelLimits", "get_engine", "register_engine", "unknown_fit",
    "unregister_engine",
]
