"""Request and response shapes of the embedding server, and its OpenAI-style errors.

Requests are pydantic models (validated once, here); responses are built by small
functions so the handlers stay thin. No torch here: vectors arrive as lists of floats.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "code"}}` with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON body of the error."""
        return error_body(self.message, self.type, self.code)


def error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    """An error body in the OpenAI format."""
    return {"error": {"message": message, "type": type_, "code": code}}


def invalid(message: str, code: str = "invalid_request") -> ApiError:
    """A 422: the request is well-formed JSON but not acceptable."""
    return ApiError(422, message, "invalid_request_error", code)


class _Request(BaseModel):
    # Unknown fields (OpenAI's `user`, TEI's `truncation_direction`...) are ignored, not errors.
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        None, description="Served model name; the URL segment wins when both are given."
    )


class OpenAIEmbeddingRequest(_Request):
    """`POST /v1/embeddings` (OpenAI)."""

    input: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="A text or a list of texts."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Keep the first N dimensions, renormalized.")

    def texts(self) -> list[str]:
        """The input as a list of texts; token-id input is refused with a clear message."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and not all(isinstance(item, str) for item in self.input):
            raise invalid("token-id input is not supported by this server: send text", "unsupported_input")
        return list(self.input)  # type: ignore[arg-type]


class EmbedRequest(_Request):
    """`POST /embed` (text-embeddings-inference)."""

    inputs: str | list[str]
    normalize: bool = True
    truncate: bool = False
    dimensions: int | None = Field(None, ge=1)

    def texts(self) -> list[str]:
        """The inputs as a list of texts."""
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class EmbedSparseRequest(_Request):
    """`POST /embed_sparse` (text-embeddings-inference, SPLADE models)."""

    inputs: str | list[str]
    truncate: bool = False

    def texts(self) -> list[str]:
        """The inputs as a list of texts."""
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


def parse_request(cls: type[_Request], body: Any) -> Any:
    """Validate a decoded JSON body; raise a 422 ApiError naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise invalid(f"{where}: {first['msg']}") from None


def check_batch(texts: Sequence[str], max_client_batch_size: int) -> None:
    """Refuse an empty request or one with more inputs than the model allows (422)."""
    if not texts:
        raise invalid("the input must hold at least one text", "empty_input")
    if len(texts) > max_client_batch_size:
        raise ApiError(
            422,
            f"batch size {len(texts)} > maximum allowed batch size {max_client_batch_size}",
            "invalid_request_error",
            "client_batch_too_large",
        )


def check_dimensions(dimensions: int | None, full: int) -> None:
    """Refuse a `dimensions` larger than the model's vectors (422)."""
    if dimensions is not None and dimensions > full:
        raise invalid(f"dimensions {dimensions} > the model's {full} dimensions", "invalid_dimensions")


def encode_base64(vector: Sequence[float] | bytes) -> str:
    """A vector as little-endian float32 bytes in base64, as the OpenAI API sends it."""
    raw = vector if isinstance(vector, bytes) else struct.pack(f"<{len(vector)}f", *vector)
    return base64.b64encode(raw).decode("ascii")


def openai_response(
    model: str, embeddings: Sequence[list[float] | str], prompt_tokens: int
) -> dict[str, Any]:
    """The body of a `/v1/embeddings` answer (each embedding a list of floats or base64 text)."""
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def sparse_response(rows: Sequence[Sequence[tuple[int, float]]]) -> list[list[dict[str, float | int]]]:
    """The body of an `/embed_sparse` answer: per input, its non-zero `{index, value}` pairs."""
    return [[{"index": i, "value": v} for i, v in row] for row in rows]


def models_response(names: Sequence[str], created: int) -> dict[str, Any]:
    """The body of `GET /v1/models`."""
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": created, "owned_by": "jupyter-modeldeploy"} for n in names
        ],
    }
