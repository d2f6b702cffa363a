"""The fit check's parts: header readers, the estimate's arithmetic, the comparison and its message."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines.gguf import NotGGUF, architecture, data_offset, read_metadata
from jupyter_modeldeploy.engines.llamacpp import KV_BYTES, LLAMACPP_RUNTIME
from jupyter_modeldeploy.engines.safetensors import NotSafetensors, read_folder, read_header
from jupyter_modeldeploy.fit import Free, check, estimate
from jupyter_modeldeploy.fit.estimate import Estimate
from jupyter_modeldeploy.formats import describe_fit

MiB = 1024 * 1024


def write_gguf(path: Path, *, layers: int = 4, embd: int = 64, heads: int = 4, kv_heads: int = 2) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_embedding_length(embd)
    writer.add_feed_forward_length(4 * embd)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_context_length(1024)
    writer.add_token_list([f"t{i}" for i in range(100)])
    writer.add_tensor("token_embd.weight", np.zeros((100, embd), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_metadata_without_the_tensors(tmp_path: Path) -> None:
    arch = architecture(read_metadata(write_gguf(tmp_path / "m.gguf")))
    assert arch == {"n_layer": 4, "n_embd": 64, "n_ff": 256, "n_head": 4, "n_head_kv": 2, "key_length": 16,
                    "value_length": 16, "n_ctx_train": 1024, "n_vocab": 100}


def test_data_offset_is_where_the_tensors_begin(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", embd=64)
    offset = data_offset(path)
    tensor_bytes = 100 * 64 * 4
    assert offset % 32 == 0
    assert path.stat().st_size - offset == tensor_bytes, "what follows the header is exactly the one tensor"
    with pytest.raises(NotGGUF):
        (tmp_path / "x.gguf").write_bytes(b"GGML" + b"\0" * 40)
        data_offset(tmp_path / "x.gguf")


def test_not_gguf_is_said(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"GGML" + b"\0" * 40)
    with pytest.raises(NotGGUF):
        read_metadata(tmp_path / "x.gguf")
    (tmp_path / "short.gguf").write_bytes(b"GGUF\x03\0\0\0")
    with pytest.raises(NotGGUF, match="ends early"):
        read_metadata(tmp_path / "short.gguf")


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    header = {name: {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]} for name, (dtype, shape) in tensors.items()}
    raw = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def test_safetensors_headers_give_parameters_and_bytes(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "a.safetensors", {"w": ("F32", [10, 10]), "b": ("BF16", [10])})
    write_safetensors(tmp_path / "b.safetensors", {"v": ("F16", [4, 5])})
    assert read_header(tmp_path / "a.safetensors").parameters == 110
    total = read_folder(tmp_path)
    assert (total.parameters, total.stored_bytes) == (130, 400 + 20 + 40)
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 5) + b"nope!")
    with pytest.raises(NotSafetensors):
        read_header(tmp_path / "bad.safetensors")


def test_llamacpp_estimate_is_weights_kv_compute_runtime(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf")
    small = estimate(parse_config({"kind": "llamacpp", "name": "x", "model": str(model), "ctx_size": 1000}))
    big = estimate(parse_config({"kind": "llamacpp", "name": "x", "model": str(model), "ctx_size": 5000}))
    per_token = 4 * 2 * (16 + 16) * KV_BYTES  # layers, kv heads, key + value length, f16
    assert big.total("host") - small.total("host") == per_token * (5120 - 1024)  # padded to 256 cells
    assert small.total("gpu") == 0
    whats = [p.what for p in small.parts]
    assert whats[0] == "weights (GGUF tensors)" and any(w.startswith("KV cache (1024 tokens") for w in whats)
    assert small.total("host") > model.stat().st_size + LLAMACPP_RUNTIME


def test_llamacpp_on_a_gpu_splits_by_offloaded_layers(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf")
    all_layers = estimate(parse_config({"kind": "llamacpp", "name": "x", "model": str(model)}), gpu=True)
    assert not [p for p in all_layers.parts if p.what.startswith("weights") and p.where == "host"]
    half = estimate(parse_config({"kind": "llamacpp", "name": "x", "model": str(model), "n_gpu_layers": 2}), gpu=True)
    weights = {p.where: p.bytes for p in half.parts if p.what.startswith("weights")}
    assert weights["gpu"] == pytest.approx(weights["host"] * 2 / 3, rel=0.01)


def test_a_model_not_downloaded_has_no_estimate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    guess = estimate(parse_config({"kind": "llamacpp", "name": "x", "model": "someone/repo/model.gguf"}))
    assert not guess.known and "not downloaded" in guess.notes[0]
    report = check(guess, Free(host_bytes=10 * MiB))
    assert report.fits is None


def test_check_says_what_does_not_fit_with_the_numbers() -> None:
    guess = Estimate()
    guess.add("weights", 300 * MiB)
    guess.add("weights on the GPU", 2048 * MiB, "gpu")
    report = check(guess, Free(host_bytes=1024 * MiB, gpu_bytes=[1024 * MiB, 512 * MiB], reserved_host_bytes=800 * MiB))
    assert report.fits is False
    assert report.message == ("does not fit: host RAM: needs 300 MiB, 224 MiB free; GPU memory: needs 2048 MiB, "
                              "1536 MiB free (after 800 MiB that loading deployments will still take)")
    ok = check(guess, Free(host_bytes=4096 * MiB, gpu_bytes=[4096 * MiB]))
    assert ok.fits is True and ok.message.startswith("fits: needs 300 MiB of host RAM (4096 MiB free)")
    text = describe_fit(report.to_json())
    assert text.splitlines()[0].startswith("memory: does not fit: host RAM: needs 300 MiB")
    assert "gpu   2048 MiB  weights on the GPU" in text


def test_embedding_estimate_counts_conversion_and_the_largest_batch(tmp_path: Path) -> None:
    folder = tmp_path / "st"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", {"w": ("F32", [1000, 1000])})
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 4, "intermediate_size": 100}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    entry = {"model": str(folder), "max_batch_tokens": 1024}
    fp32 = estimate(parse_config({"kind": "embedding", "name": "e", "models": [entry]}))
    bf16 = estimate(parse_config({"kind": "embedding", "name": "e", "models": [{**entry, "dtype": "bfloat16"}]}))
    parts = {p.what: p.bytes for p in bf16.parts}
    assert parts["st: weights (bfloat16)"] == 2_000_000 and parts["st: stored weights while converting"] == 4_000_000
    assert parts["st: activations (1024 tokens in one batch)"] == 8 * 4 * 128 * 128 * 4 * 2 + 1024 * 100 * 4
    assert "st: stored weights while converting" not in {p.what for p in fp32.parts}


def test_an_engine_without_an_estimate_of_its_own_answers_unknown_in_words(tmp_path: Path) -> None:
    from jupyter_modeldeploy.engines import Engine, FitInputs, unknown_fit

    class Bare(Engine):  # keeps the contract's default fit_inputs
        kind = "bare"

    config = parse_config({"kind": "llamacpp", "name": "x", "model": str(tmp_path / "m.gguf")})
    answer = Bare().fit_inputs(config, gpu=False, gpu_total_bytes=0)
    assert answer == unknown_fit("bare") == FitInputs(notes=("no estimate for kind 'bare'",), known=False)
