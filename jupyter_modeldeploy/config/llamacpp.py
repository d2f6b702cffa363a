"""Options of a `llamacpp` deployment: GGUF models served by llama.cpp's `llama-server`."""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from pydantic import ConfigDict, field_validator

from .common import DeploymentBase, check_home, option

TENSOR_SPLIT_RE = re.compile(r"^\d+(\.\d+)?(,\d+(\.\d+)?)*$")


MODEL_ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"

#: What a `cli_args` string leaves in force: the deployment's own settings (these groups) and these
#: fields; every other field is a llama-server flag the string replaces.
CLI_ARGS_KEEPS_GROUPS = ("Instance", "General", "Idle")
CLI_ARGS_KEEPS_FIELDS = ("model", "model_alias", "cli_args")


def _name_what_cli_args_overrides(schema: dict[str, Any]) -> None:
    """In the JSON Schema: `cli_args.overrides` lists the fields it replaces, so every form greys out the same."""
    properties = schema.get("properties", {})
    overridden = [name for name, prop in properties.items()
                  if prop.get("group") not in CLI_ARGS_KEEPS_GROUPS and name not in CLI_ARGS_KEEPS_FIELDS]
    if "cli_args" in properties:
        properties["cli_args"]["overrides"] = overridden


class LlamaCppConfig(DeploymentBase):
    """A llama.cpp deployment of one GGUF model (chat/completions, or embeddings)."""

    model_config = ConfigDict(json_schema_extra=_name_what_cli_args_overrides)

    kind: Literal["llamacpp"] = option(
        "llamacpp", group="Instance", description="Deployment kind: GGUF models on llama.cpp."
    )

    # Model
    model: str = option(
        ...,
        group="Model",
        description="Local path to a .gguf file, or a Hugging Face file 'owner/repo/path/file.gguf'.",
        min_length=1,
    )
    model_alias: str | None = option(
        None,
        group="Model",
        description="Model name the endpoint answers to (default: the file name without .gguf).",
        pattern=MODEL_ALIAS_PATTERN,
    )
    additional_models: list[str] = option(
        [],
        group="Model",
        description="More GGUF models served by this deployment (llama.cpp router mode); each answers to its "
        "file name. With max_cuda_memory_gib set, the most recently used models that fit stay loaded.",
    )
    cli_args: str | None = option(
        None,
        group="Model",
        description="Raw llama-server arguments; when set, every other engine field is ignored "
        "except model.",
    )
    verbose: bool = option(False, group="Model", description="llama-server verbose logging.")
    no_mmap: bool = option(
        False,
        group="Model",
        description="Load the whole model into memory instead of memory-mapping the file.",
    )
    cont_batching: bool = option(
        True, group="Model", description="Continuous batching of concurrent requests."
    )
    embedding: bool = option(
        False,
        group="Model",
        description="Serve embeddings (/v1/embeddings) instead of completions.",
    )
    pooling: Literal["mean", "cls", "last", "none", "rank"] = option(
        "mean", group="Model", description="Pooling of token vectors in embedding mode."
    )
    n_gpu_layers: int = option(
        9999,
        group="Model",
        description="Layers to offload to the GPU (9999 = all; ignored without a GPU build).",
        ge=0,
    )

    # Sampling defaults
    temperature: float = option(0.8, group="Sampling defaults", description="Temperature.", ge=0)
    top_k: int = option(40, group="Sampling defaults", description="Top-k sampling (0 = off).", ge=0)
    top_p: float = option(
        0.95, group="Sampling defaults", description="Top-p sampling (1.0 = off).", ge=0, le=1
    )
    min_p: float = option(
        0.05, group="Sampling defaults", description="Min-p sampling (0.0 = off).", ge=0, le=1
    )
    xtc_probability: float = option(
        0.0, group="Sampling defaults", description="XTC probability (0.0 = off).", ge=0, le=1
    )
    xtc_threshold: float = option(
        0.1, group="Sampling defaults", description="XTC threshold (above 0.5 = off).", ge=0, le=1
    )
    typical_p: float = option(
        1.0, group="Sampling defaults", description="Locally typical sampling p (1.0 = off).", ge=0, le=1
    )
    repeat_penalty: float = option(
        1.0, group="Sampling defaults", description="Penalty for repeated tokens (1.0 = off).", ge=0
    )
    repeat_last_n: int = option(
        64,
        group="Sampling defaults",
        description="Tokens considered for the repeat penalty (0 = off, -1 = context size).",
        ge=-1,
    )

    # Context
    ctx_size: int = option(
        4096, group="Context", description="Context size in tokens (0 = the model's).", ge=0
    )
    rope_freq_base: float | None = option(
        None, group="Context", description="RoPE base frequency (empty: from the model).", gt=0
    )
    rope_scaling: Literal["none", "linear", "yarn"] | None = option(
        None, group="Context", description="RoPE frequency scaling method (empty: from the model)."
    )
    rope_freq_scale: float | None = option(
        None,
        group="Context",
        description="RoPE frequency scaling factor; expands context by 1/N (empty: from the model).",
        gt=0,
    )

    # YaRN
    yarn_ext_factor: float = option(
        -1.0,
        group="YaRN",
        description="YaRN extrapolation mix factor (-1 = from the model, 0 = full interpolation).",
    )
    yarn_attn_factor: float | None = option(
        None, group="YaRN", description="YaRN magnitude scaling factor (empty: from the model)."
    )
    yarn_beta_fast: float | None = option(
        None, group="YaRN", description="YaRN low correction dim / beta (empty: from the model)."
    )
    yarn_beta_slow: float | None = option(
        None, group="YaRN", description="YaRN high correction dim / alpha (empty: from the model)."
    )

    # Performance
    threads: int | None = option(
        None, group="Performance", description="Threads for generation (empty: automatic).", ge=1
    )
    threads_batch: int | None = option(
        None,
        group="Performance",
        description="Threads for prompt processing (empty: same as threads).",
        ge=1,
    )
    parallel: int = option(
        4, group="Performance", description="Parallel slots: requests decoded together.", ge=1, le=256
    )
    max_concurrent_requests: int = option(
        64,
        group="Performance",
        description="Requests in flight past which the gateway answers 429 at once.",
        ge=1,
    )

    # GPUs
    tensor_split: str | None = option(
        None,
        group="GPUs",
        description="Fraction of the model per GPU, e.g. '3,2'.",
    )
    split_mode: Literal["none", "layer", "row"] = option(
        "layer", group="GPUs", description="How to split the model across GPUs."
    )
    main_gpu: int = option(
        0, group="GPUs", description="GPU for the model (split_mode none) or intermediate results.", ge=0
    )
    numa: Literal["distribute", "isolate", "numactl"] | None = option(
        None, group="GPUs", description="NUMA optimisation (empty: off)."
    )

    @field_validator("model")
    @classmethod
    def _model_path(cls, value: str) -> str:
        return check_home(value)

    @field_validator("additional_models")
    @classmethod
    def _additional_models(cls, value: list[str]) -> list[str]:
        for path in value:
            check_home(path)
        stems = [m.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf") for m in value]
        if any(not m.strip() for m in value):
            raise ValueError("additional model paths must not be empty")
        if len(set(stems)) != len(stems):
            raise ValueError("additional models must have different file names (they are the model names)")
        return value

    @field_validator("tensor_split")
    @classmethod
    def _tensor_split(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not TENSOR_SPLIT_RE.match(value.replace(" ", "")):
            raise ValueError("tensor_split must be comma-separated numbers such as '3,2'")
        return value.replace(" ", "") if value else None

    @field_validator("cli_args")
    @classmethod
    def _cli_args(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            args = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cli_args is not a valid argument string: {exc}") from None
        reserved = {"--host", "--port", "--api-key", "--api-key-file", "-m", "--model"}
        clash = sorted(reserved.intersection(a.split("=", 1)[0] for a in args))
        if clash:
            raise ValueError(
                f"cli_args must not set {', '.join(clash)}: the model field and the supervisor set them"
            )
        return value.strip()
