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
    tei_error_body,
)
from jupyter_modeldeploy.engines.embedding_server.rerank_protocol import (
    CohereRerankRequest,
    RerankRequest,
    cohere_rerank_response,
    rerank_response,
)


def test_openai_request_accepts_a_string_or_a_list() -> None:
    assert parse_request(OpenAIEmbeddingRequest, {"input": "hi", "model": "m"}).items() == ["hi"]
    request = parse_request(OpenAIEmbeddingRequest, {"input": ["a", "b"], "user": "ignored"})
    assert request.items() == ["a", "b"]
    assert request.encoding_format == "float"
    assert request.model is None


@pytest.mark.parametrize("cls", [OpenAIEmbeddingRequest, EmbedRequest, EmbedSparseRequest])
def test_token_ids_are_inputs_as_tei_and_openai_take_them(cls: type) -> None:
    field = "input" if cls is OpenAIEmbeddingRequest else "inputs"
    assert parse_request(cls, {field: [101, 7592, 102]}).items() == [[101, 7592, 102]]
    assert parse_request(cls, {field: [[1, 2], [3]]}).items() == [[1, 2], [3]]
    assert parse_request(cls, {field: ["text", [5, 6]]}).items() == ["text", [5, 6]]
    for bad in ([-1], [1.5], [True], [[1, "2"]]):
        with pytest.raises(ApiError) as info:
            parse_request(cls, {field: bad})
        assert info.value.status == 422, bad


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
    assert (embed.items(), embed.normalize, embed.truncate, embed.prompt_name) == (["hello"], True, None, None)
    assert not embed.truncate_left
    sparse = parse_request(EmbedSparseRequest, {"inputs": ["a", "b"], "truncate": True})
    assert sparse.items() == ["a", "b"] and sparse.truncate
    left = parse_request(EmbedRequest, {"inputs": "x", "truncation_direction": "Left", "prompt_name": "query"})
    assert left.truncate_left and left.prompt_name == "query"
    with pytest.raises(ApiError):
        parse_request(EmbedRequest, {"inputs": "x", "truncation_direction": "middle"})


def test_client_batch_limit_message_says_the_limit() -> None:
    check_batch(["a"] * 4, 4)
    with pytest.raises(ApiError) as info:
        check_batch(["a"] * 5, 4)
    assert info.value.status == 422
    assert "maximum allowed batch size 4" in info.value.message
    check_batch([""], 4)  # an empty text is an input; an empty list of token ids is not
    for nothing in ([], [[1], []]):
        with pytest.raises(ApiError) as info:
            check_batch(nothing, 4)
        assert info.value.status == 400 and info.value.body("tei")["error_type"] == "Empty"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(413, "Validation"), (422, "Validation"), (404, "Validation"), (424, "Backend"), (429, "Overloaded")],
)
def test_errors_in_tei_shape_on_tei_routes(status: int, error_type: str) -> None:
    error = ApiError(status, "why", "invalid_request_error", "some_code")
    assert error.body("tei") == {"error": "why", "error_type": error_type}
    assert error.body() == {"error": {"message": "why", "type": "invalid_request_error", "code": "some_code"}}
    assert tei_error_body("x", "Tokenizer") == {"error": "x", "error_type": "Tokenizer"}


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


def test_rerank_requests() -> None:
    tei = parse_request(RerankRequest, {"query": "q", "texts": ["a", "b"]})
    assert (tei.items(), tei.raw_scores, tei.return_text, tei.truncate) == (["a", "b"], False, False, None)
    cohere = parse_request(
        CohereRerankRequest, {"model": "r", "query": "q", "documents": ["a", {"text": "b", "id": 7}], "top_n": 1}
    )
    assert cohere.items() == ["a", "b"] and cohere.top_n == 1 and cohere.return_documents
    for bad in ({"query": "q"}, {"query": "q", "documents": ["a"], "top_n": 0}, {"query": 1, "documents": []}):
        with pytest.raises(ApiError):
            parse_request(CohereRerankRequest, bad)


def test_rerank_responses_are_sorted_best_first() -> None:
    scores = [0.2, 0.9, 0.5]
    assert rerank_response(scores, ["a", "b", "c"], False) == [
        {"index": 1, "score": 0.9},
        {"index": 2, "score": 0.5},
        {"index": 0, "score": 0.2},
    ]
    assert rerank_response(scores, ["a", "b", "c"], True)[0] == {"index": 1, "score": 0.9, "text": "b"}
    body = cohere_rerank_response("r", scores, ["a", "b", "c"], 2, True, 11)
    assert body["model"] == "r" and body["usage"] == {"total_tokens": 11}
    assert body["results"] == [
        {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}},
        {"index": 2, "relevance_score": 0.5, "document": {"text": "c"}},
    ]
    assert "document" not in cohere_rerank_response("r", scores, ["a", "b", "c"], None, False, 0)["results"][0]
