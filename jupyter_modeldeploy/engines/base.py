"""The engine interface: turn a deployment config into a command line and environment.

Nothing outside `engines/` knows an engine's flags. The supervisor asks an engine for a
`LaunchPlan` and runs it; the gateway reads the plan's health and metrics paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ..config import DeploymentBase
from .progress import ProgressPattern
from .routes import RouteTable


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
class EngineAddress:
    """Where an engine listens: a Unix socket in the deployment's private folder, or a TCP port.

    Local engines listen on a Unix socket inside the 0700 work folder, so no other user of the
    host can reach them, whatever routes the engine leaves open without its key.
    """

    socket_path: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None

    @property
    def base_url(self) -> str:
        """The URL prefix of requests to the engine (the host part is nominal for a socket)."""
        return "http://engine" if self.socket_path else f"http://{self.host}:{self.port}"

    def describe(self) -> str:
        """A short form for logs."""
        return f"unix:{self.socket_path}" if self.socket_path else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LaunchContext:
    """What the supervisor decided for one launch."""

    port: int  # a free loopback port, for engines that cannot listen on a Unix socket
    engine_key: str  # random key only the gateway knows; the engine should require it
    work_dir: Path  # a private folder for this deployment (key files, engine caches)
    settings: EngineSettings = EngineSettings()
    socket_path: Path | None = None  # the Unix socket the engine should listen on (in a 0700 folder)
    # Download progress of the model files planning fetches: (bytes done, bytes total or None).
    on_download: Callable[[int, int | None], None] | None = None
    host: str = "127.0.0.1"  # the interface a TCP engine listens on (a cluster node's address on Ray)
    ray_address: str | None = None  # on a Ray cluster: its address, for engines that use Ray themselves (vLLM)

    @property
    def address(self) -> EngineAddress:
        """Where an engine that follows this context listens: the Unix socket if there is one, else TCP."""
        if self.socket_path is not None:
            return EngineAddress(socket_path=str(self.socket_path))
        return EngineAddress(host=self.host, port=self.port)


@dataclass(frozen=True)
class ChartedMetrics:
    """The engine's own Prometheus metrics worth charting, by its names (counters become per-second rates)."""

    gauges: frozenset[str] = frozenset()
    counters: frozenset[str] = frozenset()

    @property
    def names(self) -> frozenset[str]:
        return self.gauges | self.counters


LLAMACPP_METRICS = ChartedMetrics(
    gauges=frozenset({"llamacpp:requests_processing", "llamacpp:requests_deferred", "llamacpp:kv_cache_usage_ratio",
                      "llamacpp:predicted_tokens_seconds", "llamacpp:prompt_tokens_seconds"}),
    counters=frozenset({"llamacpp:tokens_predicted_total", "llamacpp:prompt_tokens_total", "llamacpp:n_decode_total"}),
)
VLLM_METRICS = ChartedMetrics(
    gauges=frozenset({"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
                      "vllm:kv_cache_usage_perc"}),
    counters=frozenset({"vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:request_success_total"}),
)


@dataclass(frozen=True)
class ModelLimits:
    """Per-model request limits the gateway enforces before the engine sees a request."""

    payload_limit_bytes: int | None = None  # largest request body
    max_client_batch_size: int | None = None  # most inputs in one request


def limits_for(limits: dict[str, ModelLimits], model: str | None) -> ModelLimits:
    """A served model's limits from a per-model table (the first model's when none is named)."""
    if model in limits:
        return limits[model]
    return next(iter(limits.values()), ModelLimits())


@dataclass(frozen=True)
class EngineCall:
    """One HTTP request to the engine (a control action such as sleep or wake), for the supervisor to make."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, object] | None = None


@dataclass(frozen=True)
class MemoryNeed:
    """One part of the memory an engine takes at its peak, for the fit check (docs/fit.md)."""

    what: str
    bytes: int
    where: Literal["gpu", "host"] = "host"


@dataclass(frozen=True)
class FitInputs:
    """An engine's own answer to the fit check: what it will take at its peak, part by part; or, with `known`
    False, that it cannot say, and why (`notes`)."""

    parts: tuple[MemoryNeed, ...] = ()
    notes: tuple[str, ...] = ()
    known: bool = True


class ModelFileUnreadable(ValueError):
    """A model file whose header cannot be read for the fit check (not GGUF, not safetensors, cut short)."""


def unknown_fit(kind: str) -> FitInputs:
    """The default answer of an engine with no estimate of its own: unknown, said in words (never an error)."""
    return FitInputs(notes=(f"no estimate for kind {kind!r}",), known=False)


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
    request_priority: bool = False  # the engine schedules by a body's `priority` (lower first): the key's class goes
    model_status_path: str | None = None  # where a multi-model engine lists its models' states
    # The engine's words for a model's state there, in ours (on_device, on_disk, loading); others pass as they are.
    model_state_words: dict[str, str] = field(default_factory=dict)
    # The engine serves each model under `/<model>/...` itself: the gateway forwards a model's URL
    # segment as it is instead of moving the model into the JSON body (which a GET or a non-JSON
    # body cannot carry).
    model_routes: bool = False
    routes: RouteTable = field(default_factory=RouteTable)  # the serving API: the gateway's allow-list
    listen: EngineAddress | None = None  # where the engine listens (None: TCP on ctx.port)
    limits: dict[str, ModelLimits] = field(default_factory=dict)  # per served model name
    max_concurrent_requests: int | None = None  # the gateway answers 429 past this many in flight
    charted_metrics: ChartedMetrics = field(default_factory=ChartedMetrics)  # from metrics_path, for the charts
    sleep_calls: list[EngineCall] = field(default_factory=list)  # put the engine to sleep when idle (empty: none)
    wake_calls: list[EngineCall] = field(default_factory=list)  # wake it before a request is forwarded
    progress: list[ProgressPattern] = field(default_factory=list)  # console lines that mark its loading phases

    def limits_for(self, model: str | None) -> ModelLimits:
        """The limits of a served model (the first model's when none is named)."""
        return limits_for(self.limits, model)

    def largest_payload_limit(self) -> int | None:
        """The largest body any model takes (the check possible before the model is known)."""
        values = [lim.payload_limit_bytes for lim in self.limits.values() if lim.payload_limit_bytes is not None]
        return max(values) if values else None


class Engine(Protocol):
    """One engine kind."""

    kind: str

    def plan(self, config: DeploymentBase, ctx: LaunchContext) -> LaunchPlan:
        """The command line, environment and endpoints for this config."""
        ...

    def model_tasks(self, config: DeploymentBase) -> dict[str, str]:
        """Each served model's name and what it does (`chat`, `embed` or `rerank`), from the config alone."""
        ...

    def availability(self, settings: EngineSettings) -> dict[str, object]:
        """Whether this engine can run here: `available`, the `program` it runs, and `notes` on how to
        install what is missing (for the launch form and `GET /modeldeploy/engines`)."""
        ...

    def adapter_calls(self, action: str, name: str, path: str | None = None) -> list[EngineCall] | None:
        """The requests that load (`add`) or unload (`remove`) a LoRA adapter on the running engine; None
        when this engine cannot change its adapters at runtime (a capability, asked before any other check)."""
        ...

    def adapters(self, config: DeploymentBase) -> dict[str, str] | None:
        """The LoRA adapters `config` serves (name → path); None when it serves none that change at runtime
        (an engine without adapters, or adapters turned off). The default is None."""
        return None

    def with_adapters(self, config: DeploymentBase, adapters: dict[str, str]) -> dict[str, object]:
        """The option values (merged into the config's export) that make `config` serve exactly `adapters`."""
        raise NotImplementedError(f"the {self.kind} engine serves no LoRA adapters")

    def fit_inputs(self, config: DeploymentBase, *, gpu: bool, gpu_total_bytes: int) -> FitInputs:
        """The memory this engine will take at its peak for `config` (on the GPUs when `gpu`; `gpu_total_bytes`:
        their memory), for the fit check (`fit.estimate`, docs/fit.md), read from the model files' headers only
        (`gguf.py`, `safetensors.py`, found by `locate.py`; what the built-in engines share is in
        `fit_inputs.py`). OSError or `ModelFileUnreadable` when a file cannot be read: the check says so. The
        default is unknown (`unknown_fit`)."""
        return unknown_fit(self.kind)
