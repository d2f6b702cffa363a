"""Options of an `llm` deployment: Hugging Face models served by vLLM's OpenAI server."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator, model_validator

from .common import DeploymentBase, option

#: LoRA ranks vLLM 0.32 accepts for --max-lora-rank.
VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Quantization methods vLLM 0.32 accepts for --quantization, less the deprecated ones
#: (fbgemm_fp8, fp_quant); checked against vLLM in a test.
VLLM_QUANTIZATIONS: tuple[str, ...] = (
    "awq", "auto_awq", "fp8", "modelopt", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed",
    "auto_gptq", "gptq", "gptq_marlin", "awq_marlin", "humming", "compressed-tensors", "experts_int8",
    "quark", "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online",
    "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only",
    "nvfp4_per_token", "mxfp8",
)
LORA_MODULE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*=\S+$")


class LlmConfig(DeploymentBase):
    """A vLLM deployment of one Hugging Face model, with optional LoRA adapters."""

    kind: Literal["llm"] = option("llm", group="Instance", description="Deployment kind: vLLM.")

    # Model
    model: str = option(
        ..., group="Model", description="Local model folder or Hugging Face repo id.", min_length=1
    )
    trust_remote_code: bool = option(
        False, group="Model", description="Run code shipped with the model repository."
    )
    revision: str | None = option(None, group="Model", description="Model revision (branch, tag or commit).")
    code_revision: str | None = option(
        None, group="Model", description="Revision of the model's remote code."
    )
    max_model_len: int | None = option(
        None, group="Model", description="Context length (empty: from the model).", ge=1
    )
    tokenizer: str | None = option(
        None, group="Model", description="Tokenizer path or repo (empty: the model's)."
    )
    tokenizer_revision: str | None = option(None, group="Model", description="Tokenizer revision.")
    tokenizer_mode: Literal["auto", "slow"] = option(
        "auto",
        group="Model",
        description="'auto' uses the fast tokenizer when there is one; 'slow' forces the Python one.",
    )

    # LoRA
    enable_lora: bool = option(False, group="LoRA", description="Serve LoRA adapters.")
    lora_modules: list[str] = option(
        [],
        group="LoRA",
        description="Adapters as name=path; each is served as its own model name.",
    )
    max_loras: int = option(1, group="LoRA", description="Adapters in one batch.", ge=1)
    max_lora_rank: int = option(
        16,
        group="LoRA",
        description=f"Largest adapter rank; one of {', '.join(map(str, VLLM_LORA_RANKS))}.",
        json_schema_extra={"enum": list(VLLM_LORA_RANKS)},
    )
    lora_extra_vocab_size: int = option(
        0,
        group="LoRA",
        description="Extra vocabulary for adapters. No effect since vLLM 0.32 (dropped there).",
        ge=0,
    )
    lora_dtype: Literal["auto", "float16", "bfloat16", "float32"] = option(
        "auto", group="LoRA", description="Data type of the adapters (vLLM: auto, float16 or bfloat16)."
    )
    max_cpu_loras: int | None = option(
        None,
        group="LoRA",
        description="Adapters kept in CPU memory (at least max_loras; empty: max_loras).",
        ge=1,
    )

    # General
    disable_log_stats: bool = option(False, group="General", description="Do not log throughput statistics.")
    enforce_eager: bool = option(
        False, group="General", description="Eager mode only: faster start, no CUDA graphs / compilation."
    )
    disable_custom_all_reduce: bool = option(
        False, group="General", description="Use NCCL all-reduce instead of vLLM's own."
    )
    disable_log_requests: bool = option(
        True,
        group="General",
        description="Do not log each request (request logging is off unless this is false).",
    )
    load_format: Literal["auto", "pt", "safetensors", "npcache", "dummy"] = option(
        "auto", group="General", description="Format of the weights to load."
    )
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = option(
        "auto", group="General", description="Data type of weights and activations."
    )
    kv_cache_dtype: Literal["auto", "fp8_e5m2"] = option(
        "auto", group="General", description="Data type of the KV cache."
    )
    pipeline_parallel_size: int = option(1, group="General", description="Pipeline-parallel stages.", ge=1)
    tensor_parallel_size: int = option(1, group="General", description="Tensor-parallel replicas.", ge=1)
    max_parallel_loading_workers: int | None = option(
        None, group="General", description="Load the model in batches with this many workers.", ge=1
    )
    block_size: Literal[8, 16, 32, 64, 128] | None = option(
        None, group="General", description="KV cache block size in tokens (empty: vLLM's choice)."
    )
    seed: int | None = option(None, group="General", description="Random seed.", ge=0)
    swap_space_gib: float | None = option(
        None,
        group="General",
        description="CPU swap space per GPU (GiB). Dropped in vLLM 0.32: mapped to --kv-offloading-size.",
        ge=0,
    )
    gpu_memory_utilization: float = option(
        0.9, group="General", description="Fraction of GPU memory for the model and KV cache.", gt=0, le=1
    )
    max_num_batched_tokens: int | None = option(
        None, group="General", description="Tokens per scheduler step.", ge=1
    )
    max_num_seqs: int | None = option(None, group="General", description="Sequences per step.", ge=1)
    max_paddings: int | None = option(
        None,
        group="General",
        description="Paddings in a batch. No effect since vLLM 0.32 (dropped there).",
        ge=0,
    )
    quantization: str | None = option(
        None, group="General", description="Quantization method (e.g. awq, gptq, fp8; empty: from the model)."
    )
    max_context_len_to_capture: int | None = option(
        None,
        group="General",
        description="Longest context covered by CUDA graphs. Dropped in vLLM 0.32: mapped to "
        "--max-cudagraph-capture-size.",
        ge=1,
    )
    max_log_len: int | None = option(
        None, group="General", description="Characters of prompt printed in logs.", ge=0
    )
    max_concurrent_requests: int = option(
        256,
        group="Performance",
        description="Requests in flight past which the gateway answers 429 at once.",
        ge=1,
    )

    @field_validator("lora_modules")
    @classmethod
    def _lora_modules(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not LORA_MODULE_RE.match(m)]
        if bad:
            raise ValueError(f"LoRA modules must be written name=path: {', '.join(bad)}")
        names = [m.split("=", 1)[0] for m in value]
        if len(set(names)) != len(names):
            raise ValueError("LoRA module names must be unique")
        return value

    @field_validator("max_lora_rank")
    @classmethod
    def _lora_rank(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            allowed = ", ".join(map(str, VLLM_LORA_RANKS))
            raise ValueError(f"vLLM accepts max_lora_rank {allowed}; got {value}")
        return value

    @field_validator("quantization")
    @classmethod
    def _quantization(cls, value: str | None) -> str | None:
        if value and value not in VLLM_QUANTIZATIONS:
            known = ", ".join(VLLM_QUANTIZATIONS)
            raise ValueError(f"vLLM knows the quantization methods {known}; got {value!r}")
        return value or None

    @field_validator("lora_dtype")
    @classmethod
    def _lora_dtype(cls, value: str) -> str:
        if value == "float32":
            raise ValueError("vLLM accepts lora_dtype auto, float16 or bfloat16; float32 is not supported")
        return value

    @model_validator(mode="after")
    def _lora_consistency(self) -> LlmConfig:
        if self.lora_modules and not self.enable_lora:
            raise ValueError("lora_modules needs enable_lora turned on")
        if any(m.split("=", 1)[0] == self.name for m in self.lora_modules):
            raise ValueError(
                f"a LoRA module may not be named like the deployment ({self.name!r}): both are model names"
            )
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras ({self.max_loras})"
            )
        return self

    @model_validator(mode="after")
    def _enough_gpus(self) -> LlmConfig:
        world = self.tensor_parallel_size * self.pipeline_parallel_size
        if world > 1 and self.placement.on_ray and self.placement.resources.gpus > 0:
            raise ValueError(
                f"on Ray, vLLM's Ray executor reserves the {world} GPUs of tensor_parallel_size x "
                "pipeline_parallel_size itself: set placement.resources.gpus to 0"
            )
        if isinstance(self.gpus, list) and self.gpus and world > len(self.gpus):
            raise ValueError(
                f"tensor_parallel_size x pipeline_parallel_size = {world} needs {world} GPUs; "
                f"gpus lists {len(self.gpus)}"
            )
        return self

    def notices(self) -> list[str]:
        """What the engine does with options it renamed or dropped, for the user to read."""
        notes: list[str] = []
        if self.lora_extra_vocab_size:
            notes.append("lora_extra_vocab_size has no effect: vLLM 0.32 dropped it.")
        if self.max_paddings is not None:
            notes.append("max_paddings has no effect: vLLM 0.32 dropped it.")
        if self.swap_space_gib is not None:
            notes.append(
                "swap_space_gib: --swap-space was dropped in vLLM 0.32; sent as --kv-offloading-size."
            )
        if self.max_context_len_to_capture is not None:
            notes.append(
                "max_context_len_to_capture: dropped in vLLM 0.32; sent as --max-cudagraph-capture-size."
            )
        if self.disable_log_stats:
            notes.append(
                "disable_log_stats also turns off vLLM's own metrics (/metrics): "
                "charts keep the gateway's counts."
            )
        if self.cuda_memory_min_threshold_kb:
            notes.append("cuda_memory_min_threshold_kb has no effect on vLLM: it has no such setting.")
        if self.tokenizer_mode == "slow":
            notes.append("tokenizer_mode 'slow' is called 'hf' in vLLM 0.32; sent as --tokenizer-mode hf.")
        return notes
