"""The engine interface: turn a deployment config into a command line and environment.

Nothing outside `engines/` knows an engine's flags. The supervisor asks an engine for a
`LaunchPlan` and runs it; the gateway reads the plan's health and metrics paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import DeploymentBase


class EngineUnavailable(RuntimeError):
    """The engine program for a kind is not installed; the message says how to install it."""


@dataclass(frozen=True)
class EngineSettings:
    """Server-wide engine settings (traitlets of the extension app)."""

    llamacpp_server: str | None = None  # path of llama-server; None: the cached build
    llamacpp_engine: str = "auto"  # "auto", "llama-server" or "llama-cpp-python" (the fallback)
    llamacpp_python: str | None = None  # Python with llama-cpp-python, for the fallback
    vllm_python: str | None = None  # Python with vLLM installed; None: the current one
    embedding_python: str | None = None  # Python with sentence-transformers; None: current
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchContext:
    """What the supervisor decided for one launch."""

    port: int  # the loopback port the engine must listen on
    engine_key: str  # random key only the gateway knows; the engine should require it
    work_dir: Path  # a private folder for this deployment (key files, engine caches)
    settings: EngineSettings = EngineSettings()


@dataclass
class LaunchPlan:
    """How to start an engine and talk to it."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"  # engine-native Prometheus text, None if none
    models: list[str] = field(default_factory=list)  # model names the engine serves
    notes: list[str] = field(default_factory=list)  # shown in the deployment's status
    secrets: list[str] = field(default_factory=list)  # values masked in logs and dry runs
    engine_requires_key: bool = True  # whether the engine checks ctx.engine_key itself
    files: dict[str, str] = field(default_factory=dict)  # name -> content written to work_dir (0600)
    stream_usage: bool = False  # ask for usage in streams (stream_options.include_usage)
    model_status_path: str | None = None  # where a multi-model engine lists its models' states
    # The engine serves each model under `/<model>/...` itself: the gateway forwards a model's URL
    # segment as it is instead of moving the model into the JSON body (which a GET or a non-JSON
    # body cannot carry).
    model_routes: bool = False


class Engine(Protocol):
    """One engine kind."""

    kind: str

    def plan(self, config: DeploymentBase, ctx: LaunchContext) -> LaunchPlan:
        """The command line, environment and endpoints for this config."""
        ...
