"""What `/info` says about a model: TEI's fields first, then this server's own.

TEI clients read `model_id`, `model_dtype`, `model_type`, the limits and `version`; the
rest (served name, pooling, dimensions, memory state) is this server's addition.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .memory import MemoryManager
from .service import ModelService

try:  # the installed package's version (importing the package itself would pull in the server extension)
    __version__ = version("jupyter-modeldeploy")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

#: The keys of TEI's `Info`, in its order.
TEI_KEYS = (
    "model_id",
    "model_sha",
    "model_dtype",
    "model_type",
    "max_concurrent_requests",
    "max_input_length",
    "max_batch_tokens",
    "max_batch_requests",
    "max_client_batch_size",
    "auto_truncate",
    "tokenization_workers",
    "version",
    "sha",
    "docker_label",
)


def model_type(service: ModelService) -> dict[str, Any]:
    """TEI's `model_type`: `{"embedding": {"pooling"}}` or `{"reranker": {"id2label", "label2id"}}`."""
    runtime = service.runtime
    if runtime.rerank:
        labels = runtime.labels or {"0": "LABEL_0"}
        return {"reranker": {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}}
    return {"embedding": {"pooling": runtime.pooling}}


def model_info(service: ModelService, memory: MemoryManager) -> dict[str, Any]:
    """One model's `/info`: its settings, limits and memory state."""
    entry, runtime = service.entry, service.runtime
    return {
        "model_id": entry.model,
        "model_sha": entry.revision,
        "model_dtype": entry.dtype,
        "model_type": model_type(service),
        "max_concurrent_requests": entry.max_concurrent_requests,
        "max_input_length": runtime.max_input_length,
        "max_batch_tokens": entry.max_batch_tokens,
        "max_batch_requests": entry.max_batch_requests,
        "max_client_batch_size": entry.max_client_batch_size,
        "auto_truncate": False,  # inputs are cut only when a request asks (truncate=true)
        "tokenization_workers": service.tokenization_workers,
        "version": __version__,
        "sha": None,
        "docker_label": None,
        "served_name": service.name,
        "task": entry.task,
        "revision": entry.revision,
        "dtype": entry.dtype,
        "pooling": runtime.pooling,
        "sparse": runtime.sparse,
        "dimensions": runtime.dimensions,
        "normalized": runtime.normalizes,
        "prompts": sorted(runtime.prompts),
        "payload_limit_bytes": entry.payload_limit_bytes,
        "memory": memory.stats(service.name),
    }


def tei_fields(info: dict[str, Any]) -> dict[str, Any]:
    """Only TEI's keys of a model's info."""
    return {key: info[key] for key in TEI_KEYS}
