"""The `embedding` engine: the project's own sentence-transformers server, several models per port.

This module only builds the launch plan; it must stay light (no torch): the Jupyter
server imports it. The server itself is `jupyter_modeldeploy.engines.embedding_server`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import DeploymentBase, EmbeddingConfig, export_config
from . import locate, progress, routes
from .base import Engine, EngineCall, EngineSettings, FitInputs, LaunchContext, LaunchPlan, ModelLimits
from .fit_inputs import CUDA_CONTEXT, MiB, Needs, Where, dtype_bytes, folder_weights, not_here, read_json

CONFIG_FILE = "embedding-config.json"
KEY_FILE = "engine.key"
#: For the fit check: a Python process with torch and sentence-transformers imported, after its first inference.
EMBEDDING_RUNTIME = 459 * MiB


class EmbeddingEngine(Engine):
    """Turns an `EmbeddingConfig` into the embedding server's command line and files."""

    kind = "embedding"

    def availability(self, settings: EngineSettings) -> dict[str, object]:
        """The project's embedding server, where sentence-transformers imports (here or in its own Python)."""
        import importlib.util

        available = importlib.util.find_spec("sentence_transformers") is not None or settings.embedding_python is not None
        return {"available": available, "program": "embedding_server"}

    def adapter_calls(self, action: str, name: str, path: str | None = None) -> list[EngineCall] | None:
        """None: sentence-transformers models take no LoRA adapters here."""
        return None

    def model_tasks(self, config: DeploymentBase) -> dict[str, str]:
        """Each model entry and its task (`embed`, or `rerank` for cross-encoders)."""
        assert isinstance(config, EmbeddingConfig)
        return {entry.name: entry.task for entry in config.models}

    def fit_inputs(self, config: DeploymentBase, *, gpu: bool, gpu_total_bytes: int) -> FitInputs:
        """sentence-transformers: each model's weights (plus the stored copy while converting), the activations of
        its largest batch (attention scores and probabilities, feed-forward), the runtime (docs/fit.md)."""
        assert isinstance(config, EmbeddingConfig)
        needs = Needs()
        where: Where = "gpu" if gpu else "host"
        for entry in config.models:
            folder = locate.model_folder(entry.model, entry.revision)
            if folder is None:
                return not_here(entry.model)
            name = entry.served_name or Path(entry.model).name
            model_config = read_json(folder / "config.json")
            weights = folder_weights(folder)
            size = dtype_bytes(entry.dtype, weights, model_config)
            needs.add(f"{name}: weights ({entry.dtype})", weights.parameters * size, where)
            if abs(weights.stored_bytes - weights.parameters * size) > 0.05 * weights.stored_bytes:
                needs.add(f"{name}: stored weights while converting", weights.stored_bytes)
            seq = int(read_json(folder / "sentence_bert_config.json").get("max_seq_length")
                      or model_config.get("max_position_embeddings") or 512)
            tokens = min(entry.max_batch_tokens, entry.max_batch_requests * seq)
            sequences = max(1, tokens // seq)
            heads = int(model_config.get("num_attention_heads") or 12)
            ff = int(model_config.get("intermediate_size") or 4 * int(model_config.get("hidden_size") or 768))
            attention = sequences * heads * seq * seq * 4 * 2  # scores and probabilities, float32
            needs.add(f"{name}: activations ({tokens} tokens in one batch)", attention + tokens * ff * 4, where)
        needs.add("Python, torch and sentence-transformers", EMBEDDING_RUNTIME)
        if gpu:
            needs.add("CUDA context", CUDA_CONTEXT, "gpu")
        return needs.inputs()

    def plan(self, config: DeploymentBase, ctx: LaunchContext) -> LaunchPlan:
        """The server's argv, its config and key files (written 0600 by the supervisor), its env."""
        if not isinstance(config, EmbeddingConfig):
            raise TypeError(f"the embedding engine needs an EmbeddingConfig, not {type(config).__name__}")
        python = ctx.settings.embedding_python or sys.executable
        argv = [
            python,
            "-m",
            "jupyter_modeldeploy.engines.embedding_server",
            "--config",
            str(ctx.work_dir / CONFIG_FILE),
            *(["--uds", str(ctx.socket_path)] if ctx.socket_path else ["--host", ctx.host, "--port", str(ctx.port)]),
            "--api-key-file",
            str(ctx.work_dir / KEY_FILE),
        ]
        env: dict[str, str] = {}
        if isinstance(config.gpus, list):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, config.gpus))
        env.update(config.env)
        secrets = [ctx.engine_key]
        if config.hf_token is not None:
            token = config.hf_token.get_secret_value()
            env["HF_TOKEN"] = token
            secrets.append(token)
        exported = json.dumps(export_config(config, include_secrets=False), indent=2, sort_keys=True)
        notes = []
        if config.max_cuda_memory_gib is not None:
            mode = "moved to CPU RAM" if config.cpu_offload else "unloaded to disk"
            notes.append(f"memory budget {config.max_cuda_memory_gib:g} GiB: idle models past it are {mode}")
        return LaunchPlan(
            argv=argv,
            env=env,
            health_path="/health",
            metrics_path="/metrics",
            progress=progress.EMBEDDING,
            models=[entry.name for entry in config.models],
            model_routes=True,
            notes=notes,
            secrets=secrets,
            engine_requires_key=True,
            files={CONFIG_FILE: exported + "\n", KEY_FILE: ctx.engine_key + "\n"},
            routes=routes.EMBEDDING_SERVER,
            listen=ctx.address,
            limits={
                entry.name: ModelLimits(entry.payload_limit_bytes, entry.max_client_batch_size) for entry in config.models
            },
        )


ENGINE = EmbeddingEngine()
