"""The `llamacpp` engine: llama.cpp's `llama-server`, or llama-cpp-python's server as fallback.

`llamacpp_args` is the one place that knows llama-server's flags; a test checks every flag it
emits against the built binary's own `--help`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shlex
import sys
from pathlib import Path

from ..config import LlamaCppConfig
from . import gguf, locate, progress, routes
from .base import (
    LLAMACPP_METRICS,
    Engine,
    EngineAddress,
    EngineCall,
    EngineSettings,
    EngineUnavailable,
    FitInputs,
    LaunchContext,
    LaunchPlan,
)
from .fit_inputs import CUDA_CONTEXT, MiB, Needs, not_here
from .hf import resolve_model_file
from .llamacpp_install import find_llama_server

FALLBACK_NOTE = (
    "fallback engine: llama-cpp-python's llama_cpp.server (no llama-server built); it serves one "
    "request at a time and has no /metrics. Run 'jupyter modeldeploy install-engine llamacpp'."
)


# llama.cpp's --log-verbosity thresholds.
LOG_VERBOSITY = {"error": 1, "warning": 2, "info": 3, "debug": 5}

# The fit check's constants (docs/fit.md).
#: llama-server's own memory beyond model, KV cache and compute buffers (binary, threads, HTTP).
LLAMACPP_RUNTIME = 24 * MiB
#: llama.cpp's micro-batch (n_ubatch) and KV cache element size (f16).
LLAMACPP_UBATCH = 512
KV_BYTES = 2


def _num(value: float) -> str:
    return f"{value:g}"


def llamacpp_args(config: LlamaCppConfig) -> list[str]:
    """llama-server flags for every engine option (not model, host, port or key)."""
    if config.cli_args:
        return shlex.split(config.cli_args)
    args: list[str] = []
    if config.verbose or config.debug:
        args.append("--verbose")
    elif config.disable_logs:
        args += ["--log-verbosity", str(LOG_VERBOSITY["error"])]
    else:
        args += ["--log-verbosity", str(LOG_VERBOSITY[config.log_level])]
    if config.no_mmap:
        # --no-mmap is gone from llama-server; loading without a memory map is --load-mode none.
        args += ["--load-mode", "none"]
    args.append("--cont-batching" if config.cont_batching else "--no-cont-batching")
    if config.embedding:
        args += ["--embeddings", "--pooling", config.pooling]
    args += ["--n-gpu-layers", str(config.n_gpu_layers)]
    args += [
        "--temp", _num(config.temperature),
        "--top-k", str(config.top_k),
        "--top-p", _num(config.top_p),
        "--min-p", _num(config.min_p),
        "--xtc-probability", _num(config.xtc_probability),
        "--xtc-threshold", _num(config.xtc_threshold),
        "--typical", _num(config.typical_p),
        "--repeat-penalty", _num(config.repeat_penalty),
        "--repeat-last-n", str(config.repeat_last_n),
        "--ctx-size", str(config.ctx_size),
    ]
    if config.rope_freq_base is not None:
        args += ["--rope-freq-base", _num(config.rope_freq_base)]
    if config.rope_scaling is not None:
        args += ["--rope-scaling", config.rope_scaling]
    if config.rope_freq_scale is not None:
        args += ["--rope-freq-scale", _num(config.rope_freq_scale)]
    args += ["--yarn-ext-factor", _num(config.yarn_ext_factor)]
    if config.yarn_attn_factor is not None:
        args += ["--yarn-attn-factor", _num(config.yarn_attn_factor)]
    if config.yarn_beta_fast is not None:
        args += ["--yarn-beta-fast", _num(config.yarn_beta_fast)]
    if config.yarn_beta_slow is not None:
        args += ["--yarn-beta-slow", _num(config.yarn_beta_slow)]
    if config.threads is not None:
        args += ["--threads", str(config.threads)]
    if config.threads_batch is not None:
        args += ["--threads-batch", str(config.threads_batch)]
    args += ["--parallel", str(config.parallel)]
    # llama-server's HTTP threads each hold one keep-alive connection; fewer threads than the
    # requests the gateway lets in (plus health and metrics polls) would leave requests waiting
    # for an idle connection to time out.
    args += ["--threads-http", str(config.max_concurrent_requests + 4)]
    if config.tensor_split:
        args += ["--tensor-split", config.tensor_split]
    args += ["--split-mode", config.split_mode, "--main-gpu", str(config.main_gpu)]
    if config.numa is not None:
        args += ["--numa", config.numa]
    return args


def model_alias(config: LlamaCppConfig) -> str:
    """The model name the endpoint answers to."""
    if config.model_alias:
        return config.model_alias
    return Path(config.model).name.removesuffix(".gguf")


def model_stem(model: str) -> str:
    """The name a router-mode model answers to: its file name without .gguf."""
    return model.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")


def models_that_fit(sizes: list[int], budget_bytes: float | None) -> int:
    """How many models may be loaded at once so that any such set fits the budget (at least 1).

    llama.cpp's router keeps the most recently used `--models-max` models; counting from the
    largest files makes every choice of that many fit.
    """
    if budget_bytes is None:
        return 0  # llama.cpp: 0 = unlimited
    total = 0
    count = 0
    for size in sorted(sizes, reverse=True):
        if total + size > budget_bytes:
            break
        total += size
        count += 1
    return max(count, 1)


def _gpu_env(config: LlamaCppConfig) -> dict[str, str]:
    if isinstance(config.gpus, list):
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, config.gpus))}
    return {}


def _fallback_python(ctx: LaunchContext) -> str | None:
    if ctx.settings.llamacpp_python:
        return ctx.settings.llamacpp_python
    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable
    return None


#: llama-server's router mode: a model's `status.value` in `/v1/models`, in the project's words.
ROUTER_STATE_WORDS = {"loaded": "on_device", "unloaded": "on_disk", "loading": "loading"}


class LlamaCppEngine(Engine):
    """Plans `llama-server` launches (or the llama-cpp-python fallback)."""

    kind = "llamacpp"

    def server_binary(self, ctx: LaunchContext) -> Path | None:
        """The llama-server to run: the setting, else the cached build; None forces the fallback."""
        if ctx.settings.llamacpp_engine == "llama-cpp-python":
            return None
        if ctx.settings.llamacpp_server:
            path = Path(ctx.settings.llamacpp_server).expanduser()
            return path if path.is_file() else None
        return find_llama_server()

    def availability(self, settings: EngineSettings) -> dict[str, object]:
        """llama-server where it is built (or set), else the llama-cpp-python fallback server."""
        from .llamacpp_install import find_llama_server

        server = settings.llamacpp_server or (str(p) if (p := find_llama_server()) else None)
        fallback = importlib.util.find_spec("llama_cpp") is not None or settings.llamacpp_python is not None
        status: dict[str, object] = {"available": bool(server) or fallback, "program": "llama-server" if server else None}
        if not server:
            status["notes"] = ["llama-server is not built: run 'jupyter modeldeploy install-engine llamacpp'"]
            if fallback:
                status["program"] = "llama_cpp.server"
        return status

    def adapter_calls(self, action: str, name: str, path: str | None = None) -> list[EngineCall] | None:
        """None: llama-server takes LoRA adapters at launch (`--lora`) only; it cannot load one at runtime."""
        return None

    def model_tasks(self, config: LlamaCppConfig) -> dict[str, str]:  # type: ignore[override]
        """The alias and every additional model: embeddings in embedding mode, else chat."""
        task = "embed" if config.embedding else "chat"
        return {name: task for name in [model_alias(config), *(model_stem(m) for m in config.additional_models)]}

    def fit_inputs(self, config: LlamaCppConfig, *, gpu: bool,  # type: ignore[override]
                   gpu_total_bytes: int) -> FitInputs:
        """llama-server: the GGUF's tensors, the f16 KV cache for ctx_size, compute buffers, the runtime; with a
        GPU, `n_gpu_layers` of the layers move their share there (docs/fit.md)."""
        files = [config.model, *config.additional_models]
        paths = [locate.gguf_file(f) for f in files]
        missing = [f for f, p in zip(files, paths) if p is None]
        if missing:
            return not_here(missing[0])
        needs = Needs()
        if config.cli_args:
            needs.notes.append("cli_args is set: the estimate uses the model's defaults, not those arguments")
        biggest: dict[str, int] = {}
        weights = 0
        for path in paths:
            assert path is not None
            arch = gguf.architecture(gguf.read_metadata(path))
            weights += path.stat().st_size
            if arch["n_layer"] * arch["n_embd"] > biggest.get("n_layer", 0) * biggest.get("n_embd", 0):
                biggest = arch
        if len(paths) > 1:
            needs.notes.append(f"{len(paths)} models: every model's weights counted, the KV cache of the largest")
        arch = biggest
        n_ctx = config.ctx_size or arch["n_ctx_train"] or 4096
        n_ctx = int(math.ceil(n_ctx / 256) * 256)  # llama.cpp pads the context to 256 cells
        kv = arch["n_layer"] * n_ctx * arch["n_head_kv"] * (arch["key_length"] + arch["value_length"]) * KV_BYTES
        slots = max(1, int(config.parallel or 1))
        compute = LLAMACPP_UBATCH * 4 * (2 * arch["n_ff"] + 6 * arch["n_embd"]) + arch["n_vocab"] * 4 * slots
        layers = arch["n_layer"] + 1  # the output layer counts as one
        offload = min(max(int(config.n_gpu_layers or 0), 0), layers) / layers if gpu else 0.0
        needs.add("weights (GGUF tensors)", weights * (1 - offload))
        needs.add("weights on the GPU", weights * offload, "gpu")
        needs.add(f"KV cache ({n_ctx} tokens, f16)", kv * (1 - offload))
        needs.add(f"KV cache on the GPU ({n_ctx} tokens, f16)", kv * offload, "gpu")
        needs.add("compute buffers", compute, "gpu" if offload else "host")
        needs.add("llama-server runtime", LLAMACPP_RUNTIME)
        if offload:
            needs.add("CUDA context", CUDA_CONTEXT, "gpu")
        return needs.inputs()

    def plan(self, config: LlamaCppConfig, ctx: LaunchContext) -> LaunchPlan:  # type: ignore[override]
        token = config.hf_token.get_secret_value() if config.hf_token else None
        model_path = resolve_model_file(config.model, token=token, progress=ctx.on_download)
        alias = model_alias(config)
        env = _gpu_env(config)
        if token:
            env["HF_TOKEN"] = token
        env.update(config.env)
        secrets = [ctx.engine_key] + ([token] if token else [])
        server = self.server_binary(ctx)
        if server is not None and config.additional_models:
            return self._router_plan(config, ctx, server, model_path, alias, env, secrets, token)
        if server is not None:
            key_file = ctx.work_dir / "engine.key"
            argv = [
                str(server),
                "--model", str(model_path),
                "--alias", alias,
                *_listen_args(ctx),
                "--api-key-file", str(key_file),
                "--metrics",
                "--slots",
                *llamacpp_args(config),
            ]
            return LaunchPlan(
                argv=argv,
                env=env,
                health_path="/health",
                metrics_path="/metrics",
                models=[alias],
                secrets=secrets,
                files={"engine.key": ctx.engine_key + "\n"},
                # No usage request: llama-server's last stream event carries `timings` with the counts.
                routes=routes.LLAMA_SERVER,
                listen=ctx.address,
                max_concurrent_requests=config.max_concurrent_requests,
                charted_metrics=LLAMACPP_METRICS,
                progress=progress.LLAMA_SERVER,
            )
        if ctx.settings.llamacpp_engine == "llama-server":
            raise EngineUnavailable(
                "llama-server is not built: run 'jupyter modeldeploy install-engine llamacpp'"
            )
        python = _fallback_python(ctx)
        if python is None:
            raise EngineUnavailable(
                "no llama.cpp engine is installed: run 'jupyter modeldeploy install-engine llamacpp'"
            )
        return self._fallback_plan(config, ctx, python, model_path, alias, env, secrets)

    def _router_plan(
        self,
        config: LlamaCppConfig,
        ctx: LaunchContext,
        server: Path,
        model_path: Path,
        alias: str,
        env: dict[str, str],
        secrets: list[str],
        token: str | None,
    ) -> LaunchPlan:
        """Several GGUF models behind one llama-server in router mode (one child per loaded model)."""
        paths = {alias: model_path}
        for reference in config.additional_models:
            paths[model_stem(reference)] = resolve_model_file(reference, token=token, progress=ctx.on_download)
        models_dir = ctx.work_dir / "models"
        models_dir.mkdir(parents=True, exist_ok=True)
        for old in models_dir.glob("*.gguf"):
            old.unlink()
        for name, path in paths.items():
            (models_dir / f"{name}.gguf").symlink_to(path)
        budget = config.max_cuda_memory_gib * (1 << 30) if config.max_cuda_memory_gib else None
        models_max = models_that_fit([p.stat().st_size for p in paths.values()], budget)
        argv = [
            str(server),
            "--models-dir", str(models_dir),
            "--models-max", str(models_max),
            *_listen_args(ctx),
            "--api-key-file", str(ctx.work_dir / "engine.key"),
            *llamacpp_args(config),
        ]
        notes = [f"router mode: {len(paths)} models, at most {models_max or len(paths)} loaded at once"]
        return LaunchPlan(
            argv=argv,
            env=env,
            health_path="/health",
            metrics_path=None,  # the router's /metrics is per model
            models=list(paths),
            notes=notes,
            progress=progress.LLAMA_SERVER,
            secrets=secrets,
            files={"engine.key": ctx.engine_key + "\n"},
            model_status_path="/v1/models",
            model_state_words=ROUTER_STATE_WORDS,
            routes=routes.LLAMA_SERVER,
            listen=ctx.address,
            max_concurrent_requests=config.max_concurrent_requests,
        )

    def _fallback_plan(
        self,
        config: LlamaCppConfig,
        ctx: LaunchContext,
        python: str,
        model_path: Path,
        alias: str,
        env: dict[str, str],
        secrets: list[str],
    ) -> LaunchPlan:
        argv = [
            python, "-m", "llama_cpp.server",
            "--model", str(model_path),
            "--model_alias", alias,
            "--host", ctx.host,
            "--port", str(ctx.port),
            "--n_ctx", str(config.ctx_size),
            "--n_gpu_layers", str(config.n_gpu_layers),
            "--embedding", str(config.embedding),
            "--use_mmap", str(not config.no_mmap),
            "--verbose", str(config.verbose or config.debug),
        ]
        if config.threads is not None:
            argv += ["--n_threads", str(config.threads)]
        if config.threads_batch is not None:
            argv += ["--n_threads_batch", str(config.threads_batch)]
        # The key goes through the environment (pydantic-settings reads API_KEY), not argv.
        fallback_env = {"API_KEY": ctx.engine_key, **env}
        lib_dir = _llama_lib_dir()
        if lib_dir is not None and "LLAMA_CPP_LIB_PATH" not in os.environ:
            fallback_env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
        return LaunchPlan(
            argv=argv,
            env=fallback_env,
            health_path="/v1/models",
            metrics_path=None,
            models=[alias],
            notes=[FALLBACK_NOTE],
            secrets=secrets,
            # llama-cpp-python's server listens on TCP only; its key guards every serving route.
            routes=routes.LLAMA_CPP_PYTHON,
            listen=EngineAddress(host=ctx.host, port=ctx.port),
            max_concurrent_requests=config.max_concurrent_requests,
        )


def _listen_args(ctx: LaunchContext) -> list[str]:
    """llama-server listens on a Unix socket when its host ends in `.sock` (the port is then ignored)."""
    if ctx.socket_path is not None:
        return ["--host", str(ctx.socket_path), "--port", str(ctx.port or 8080)]
    return ["--host", ctx.host, "--port", str(ctx.port)]


def _llama_lib_dir() -> Path | None:
    """The shared libraries of a cached build, if any (the fallback can load them)."""
    server = find_llama_server()
    if server is None:
        return None
    lib_dir = server.parent.parent / "lib"
    return lib_dir if (lib_dir / "libllama.so").exists() else None


ENGINE = LlamaCppEngine()
