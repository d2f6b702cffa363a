"""Options of an `embedding` deployment: several sentence-transformers models behind one URL."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from .common import NAME_PATTERN, DeploymentBase, StrictModel, check_home, option


class EmbeddingModelEntry(StrictModel):
    """One model of an embedding deployment (the form's "+ Add item")."""

    model: str = option(
        ..., group="Models", description="Local model folder or Hugging Face repo id.", min_length=1
    )
    served_name: str | None = option(
        None,
        group="Models",
        description="Name the model answers to (URL segment and request 'model'); default: "
        "the last part of the model path.",
        pattern=NAME_PATTERN,
    )
    task: Literal["embed", "rerank"] = option(
        "embed",
        group="Models",
        description="embed: a sentence-transformers embedding model (/v1/embeddings, /embed); "
        "rerank: a cross-encoder that scores query-document pairs (/rerank, /v1/rerank).",
    )
    revision: str | None = option(None, group="Models", description="Model revision.")
    tokenization_workers: int | None = option(
        None, group="Models", description="Tokenizer threads (empty: CPU cores).", ge=1
    )
    dtype: Literal["float32", "float16", "bfloat16"] = option(
        "float32", group="Models", description="Data type of the weights."
    )
    pooling: Literal["cls", "mean", "splade"] | None = option(
        None,
        group="Models",
        description="Pooling: cls, mean or splade (masked-LM models only); empty: the model's own. "
        "Embedding models only.",
    )
    max_concurrent_requests: int = option(
        512, group="Models", description="Requests in flight past which the answer is 429.", ge=1
    )
    max_batch_tokens: int = option(
        16384, group="Models", description="Tokens in one inference batch.", ge=1
    )
    max_batch_requests: int = option(
        64, group="Models", description="Requests in one inference batch.", ge=1
    )
    max_client_batch_size: int = option(
        32, group="Models", description="Inputs in one request; past it: 422.", ge=1
    )
    payload_limit_bytes: int = option(
        2_000_000, group="Models", description="Request body size limit; past it: 413.", ge=1
    )

    @model_validator(mode="after")
    def _pooling_embeds(self) -> EmbeddingModelEntry:
        if self.task == "rerank" and self.pooling is not None:
            raise ValueError(
                "pooling applies to embedding models; a rerank model scores with its own "
                "classification head (leave pooling empty)"
            )
        return self

    @field_validator("model")
    @classmethod
    def _model_path(cls, value: str) -> str:
        return check_home(value)

    @property
    def name(self) -> str:
        """The name this model is served under."""
        if self.served_name:
            return self.served_name
        return self.model.rstrip("/").rsplit("/", 1)[-1]


class EmbeddingConfig(DeploymentBase):
    """A sentence-transformers deployment hosting one or more embedding models."""

    kind: Literal["embedding"] = option(
        "embedding", group="Instance", description="Deployment kind: sentence-transformers embeddings."
    )
    models: list[EmbeddingModelEntry] = option(
        ..., group="Models", description="The models this deployment serves.", min_length=1
    )
    threads: int | None = option(
        None, group="Performance", description="Torch threads for inference (empty: CPU cores).", ge=1
    )

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[EmbeddingModelEntry]) -> list[EmbeddingModelEntry]:
        names = [m.name for m in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)} (set served_name)")
        return value

    @model_validator(mode="after")
    def _check(self) -> EmbeddingConfig:
        return self

    @property
    def model(self) -> str:
        """The first model, for lists that show one model per deployment."""
        return self.models[0].model
