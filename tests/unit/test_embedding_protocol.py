"""Request validation and response shapes of the embedding server (no model needed)."""

from __future__ import annotations

import base64
import struct

import pytest

from jupyter_modeldeploy.engines.embedding_server.protocol import (
    ApiError,
    EmbedRequest,
    EmbedSparseRequest,
    OpenAIEmbeddingRequest,
    check_batch,
    check_dimensions,
    encode_base64,
    error_body,
    models_response,
    openai_response,
    parse_request,
    sparse_response,
)


def test_openai_request_accepts_a_string_or_a_list() -> None:
    assert parse_request(OpenAIEmbeddingRequest, {"input": "hi", "model": "m"}).texts() == ["hi"]
    request = parse_request(OpenAIEmbeddingRequest, {"input": ["a", "b"], "user": "ignored"})
    assert request.texts() == ["a", "b"]
    assert request.encoding_format == "float"
    assert request.model is None


def test_openai_token_ids_are_refused_clearly() -> None:
    request = parse_request(OpenAIEmbeddingRequest, {"input": [[1, 2, 3]]})
    with pytest.raises(ApiError) as info:
        request.texts()
    assert info.value.status == 422
    assert "token-id" in info.value.message


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": 5}, "input"),
    ],
)
def test_openai_request_errors_name_the_field(body: dict, where: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_request(OpenAIEmbeddingRequest, body)
    assert info.value.status == 422
    assert info.value.message.startswith(where)
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def test_non_object_body_is_refused() -> None:
    with pytest.raises(ApiError) as info:
        parse_request(EmbedRequest, ["a"])
    assert info.value.status == 422


def test_tei_requests_have_tei_defaults() -> None:
    embed = parse_request(EmbedRequest, {"inputs": "hello"})
    assert (embed.texts(), embed.normalize, embed.truncate) == (["hello"], True, False)
    sparse = parse_request(EmbedSparseRequest, {"inputs": ["a", "b"], "truncate": True})
    assert sparse.texts() == ["a", "b"] and sparse.truncate


def test_client_batch_limit_message_says_the_limit() -> None:
    check_batch(["a"] * 4, 4)
    with pytest.raises(ApiError) as info:
        check_batch(["a"] * 5, 4)
    assert info.value.status == 422
    assert "maximum allowed batch size 4" in info.value.message
    with pytest.raises(ApiError):
        check_batch([], 4)


def test_dimensions_beyond_the_model_are_refused() -> None:
    check_dimensions(None, 384)
    check_dimensions(384, 384)
    with pytest.raises(ApiError) as info:
        check_dimensions(385, 384)
    assert "384" in info.value.message


def test_base64_is_little_endian_float32() -> None:
    text = encode_base64([1.0, -2.5])
    assert struct.unpack("<2f", base64.b64decode(text)) == (1.0, -2.5)
    assert encode_base64(struct.pack("<2f", 1.0, -2.5)) == text


def test_response_shapes() -> None:
    body = openai_response("m", [[0.1, 0.2], "AAAA"], 7)
    assert body["object"] == "list" and body["model"] == "m"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert sparse_response([[(3, 0.5)], []]) == [[{"index": 3, "value": 0.5}], []]
    models = models_response(["a", "b"], 10)
    assert [m["id"] for m in models["data"]] == ["a", "b"]
    assert error_body("no", "t", "c") == {"error": {"message": "no", "type": "t", "code": "c"}}
