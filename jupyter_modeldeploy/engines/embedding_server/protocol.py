"""Request and response shapes of the embedding server, and its errors in both APIs' shapes.

Requests are pydantic models (validated once, here); responses are built by small
functions so the handlers stay thin. No torch here: vectors arrive as lists of floats.
OpenAI routes answer errors as `{"error": {"message", "type", "code"}}`; TEI routes as
TEI does, `{"error", "error_type"}`.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: How a route answers errors: OpenAI's nested object or TEI's flat one.
ErrorStyle = Literal["openai", "tei"]

#: One token id (a non-negative integer; the model's vocabulary bounds it from above).
TokenId = Annotated[int, Field(ge=0, strict=True)]
#: One input: a text, or the token ids of one text, used as given.
InputItem = str | list[TokenId]


def tei_error_type(status: int) -> str:
    """TEI's `error_type` for an HTTP status, where the error does not name one."""
    if status == 429:
        return "Overloaded"
    if status == 503:
        return "Unhealthy"
    if status >= 500 or status == 424:
        return "Backend"
    return "Validation"


class ApiError(Exception):
    """An error with its HTTP status, answered in the shape of the route's API."""

    def __init__(self, status: int, message: str, type_: str, code: str, tei_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.tei_type = tei_type or tei_error_type(status)

    def body(self, style: ErrorStyle = "openai") -> dict[str, Any]:
        """The JSON body of the error in the given style."""
        if style == "tei":
            return tei_error_body(self.message, self.tei_type)
        return error_body(self.message, self.type, self.code)


def error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    """An error body in the OpenAI format."""
    return {"error": {"message": message, "type": type_, "code": code}}


def tei_error_body(message: str, error_type: str) -> dict[str, Any]:
    """An error body in text-embeddings-inference's format."""
    return {"error": message, "error_type": error_type}


def invalid(message: str, code: str = "invalid_request") -> ApiError:
    """A 422: the request is well-formed JSON but not acceptable."""
    return ApiError(422, message, "invalid_request_error", code)


def empty(message: str) -> ApiError:
    """A 400 for a request with nothing to work on (TEI's `Empty`)."""
    return ApiError(400, message, "invalid_request_error", "empty_input", "Empty")


class ModelRequest(BaseModel):
    """What every request body may carry: the model it is for."""

    # Unknown fields (OpenAI's `user`, TEI's `truncation_direction`...) are ignored, not errors.
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        None, description="Served model name; the URL segment wins when both are given."
    )


def _items(inputs: str | list[Any]) -> list[InputItem]:
    """A request's inputs as a list: a text, or a list of token ids, is one input."""
    if isinstance(inputs, str):
        return [inputs]
    if inputs and all(isinstance(item, int) for item in inputs):
        return [list(inputs)]
    return list(inputs)


#: The inputs of an embedding request: a text, one input's token ids, or a list of either.
Inputs = str | list[TokenId] | list[InputItem]


class OpenAIEmbeddingRequest(ModelRequest):
    """`POST /v1/embeddings` (OpenAI)."""

    input: Inputs = Field(..., description="A text, a list of texts, or token ids (one list per input).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Keep the first N dimensions, renormalized.")

    def items(self) -> list[InputItem]:
        """The inputs as a list, each a text or a list of token ids."""
        return _items(self.input)


class _TeiInputs(ModelRequest):
    inputs: Inputs = Field(..., description="A text, a list of texts, or token ids (one list per input).")
    truncate: bool | None = Field(
        None, description="Cut inputs longer than the model accepts (empty: no, too long is a 413)."
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = Field(
        "Right", description="Which end a truncated input loses."
    )
    prompt_name: str | None = Field(
        None, description="A prompt of the model's sentence-transformers config, put before each text."
    )

    def items(self) -> list[InputItem]:
        """The inputs as a list, each a text or a list of token ids."""
        return _items(self.inputs)

    @property
    def truncate_left(self) -> bool:
        """Whether truncation keeps the end of an input (TEI's `truncation_direction: Left`)."""
        return self.truncation_direction.lower() == "left"


class EmbedRequest(_TeiInputs):
    """`POST /embed` (text-embeddings-inference)."""

    normalize: bool = True
    dimensions: int | None = Field(None, ge=1)


class EmbedSparseRequest(_TeiInputs):
    """`POST /embed_sparse` (text-embeddings-inference, SPLADE models)."""


def parse_request(cls: type[ModelRequest], body: Any) -> Any:
    """Validate a decoded JSON body; raise a 422 ApiError naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise invalid(f"{where}: {first['msg']}") from None


def check_batch(items: Sequence[Any], max_client_batch_size: int) -> None:
    """Refuse an empty request (400) or one with more inputs than the model allows (422)."""
    if not items:
        raise empty("the input must hold at least one text")
    for index, item in enumerate(items):
        if isinstance(item, list) and not item:
            raise empty(f"input {index} has no token ids")
    if len(items) > max_client_batch_size:
        raise ApiError(
            422,
            f"batch size {len(items)} > maximum allowed batch size {max_client_batch_size}",
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
