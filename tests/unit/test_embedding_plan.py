"""The embedding engine's launch plan, and the launch-time checks that need no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_modeldeploy.config import EmbeddingConfig, parse_config
from jupyter_modeldeploy.engines.base import EngineSettings, LaunchContext
from jupyter_modeldeploy.engines.embedding import ENGINE
from jupyter_modeldeploy.engines.embedding_server.loader import LaunchError, inspect_entry


def _config(**extra: object) -> EmbeddingConfig:
    data = {
        "kind": "embedding",
        "name": "emb",
        "models": [
            {"model": "org/minilm", "served_name": "mini", "pooling": "mean"},
            {"model": "/models/splade", "pooling": "splade", "dtype": "bfloat16"},
        ],
        **extra,
    }
    config = parse_config(data)
    assert isinstance(config, EmbeddingConfig)
    return config


def _ctx(tmp_path: Path, python: str | None = None) -> LaunchContext:
    return LaunchContext(
        port=41234, engine_key="k-123", work_dir=tmp_path, settings=EngineSettings(embedding_python=python)
    )


def test_engine_kind() -> None:
    assert ENGINE.kind == "embedding"


def test_argv_and_files(tmp_path: Path) -> None:
    plan = ENGINE.plan(_config(), _ctx(tmp_path))
    assert plan.argv == [
        sys.executable,
        "-m",
        "jupyter_modeldeploy.engines.embedding_server",
        "--config",
        str(tmp_path / "embedding-config.json"),
        "--host",
        "127.0.0.1",
        "--port",
        "41234",
        "--api-key-file",
        str(tmp_path / "engine.key"),
    ]
    assert plan.files["engine.key"].strip() == "k-123"
    exported = json.loads(plan.files["embedding-config.json"])
    assert EmbeddingConfig.model_validate(exported).models[1].dtype == "bfloat16"
    assert plan.models == ["mini", "splade"]
    assert plan.model_routes  # the server answers /<model>/...: the gateway keeps that segment
    assert (plan.health_path, plan.metrics_path, plan.engine_requires_key) == ("/health", "/metrics", True)
    assert "k-123" in plan.secrets


def test_embedding_python_setting(tmp_path: Path) -> None:
    assert ENGINE.plan(_config(), _ctx(tmp_path, "/opt/st/bin/python")).argv[0] == "/opt/st/bin/python"


def test_hf_token_goes_to_env_only(tmp_path: Path) -> None:
    plan = ENGINE.plan(_config(hf_token="hf_secret", api_key="user-key", env={"A": "1"}), _ctx(tmp_path))
    assert plan.env["HF_TOKEN"] == "hf_secret"
    assert plan.env["A"] == "1"
    assert "HF_HUB_OFFLINE" not in plan.env
    assert "hf_secret" in plan.secrets
    assert not any("hf_secret" in arg for arg in plan.argv)
    for content in plan.files.values():
        assert "hf_secret" not in content and "user-key" not in content


def test_no_hf_token_no_env(tmp_path: Path) -> None:
    assert "HF_TOKEN" not in ENGINE.plan(_config(), _ctx(tmp_path)).env


def test_memory_budget_note(tmp_path: Path) -> None:
    plan = ENGINE.plan(_config(max_cuda_memory_gib=2, cpu_offload=True), _ctx(tmp_path))
    assert any("CPU RAM" in note for note in plan.notes)


def test_wrong_config_kind_is_refused(tmp_path: Path) -> None:
    other = parse_config({"kind": "llamacpp", "name": "x", "model": "m.gguf"})
    with pytest.raises(TypeError):
        ENGINE.plan(other, _ctx(tmp_path))


def test_engine_module_does_not_import_torch() -> None:
    code = (
        "import sys, jupyter_modeldeploy.engines.embedding as e; "
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _model_dir(tmp_path: Path, architectures: list[str], modules: list[dict] | None = None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": architectures}))
    if modules is not None:
        (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def _entry(path: Path, pooling: str | None, task: str = "embed"):
    config = parse_config(
        {"kind": "embedding", "name": "x", "models": [{"model": str(path), "pooling": pooling, "task": task}]}
    )
    return config.models[0]  # type: ignore[attr-defined]


def test_splade_on_a_model_without_mlm_head_fails_before_loading(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path, ["BertModel"])
    with pytest.raises(LaunchError, match=r"pooling 'splade' needs a masked-LM model.*BertModel"):
        inspect_entry(_entry(folder, "splade"))


def test_splade_on_a_masked_lm_is_sparse(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path, ["BertForMaskedLM"])
    assert inspect_entry(_entry(folder, "splade")).sparse
    assert not inspect_entry(_entry(folder, "mean")).sparse


def test_own_splade_config_is_sparse_when_pooling_unset(tmp_path: Path) -> None:
    modules = [{"type": "sentence_transformers.sparse_encoder.modules.SpladePooling", "path": "1"}]
    folder = _model_dir(tmp_path, ["BertForMaskedLM"], modules)
    assert inspect_entry(_entry(folder, None)).sparse


def test_missing_local_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="does not exist"):
        inspect_entry(_entry(tmp_path / "absent", None))


def test_rerank_needs_a_one_score_cross_encoder(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path, ["BertModel"])
    with pytest.raises(LaunchError, match=r"task 'rerank' needs a cross-encoder.*BertModel"):
        inspect_entry(_entry(folder, None, "rerank"))
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b"}})
    )
    with pytest.raises(LaunchError, match="classifier with 2 labels"):
        inspect_entry(_entry(folder, None, "rerank"))
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    source = inspect_entry(_entry(folder, None, "rerank"))
    assert source.rerank and not source.sparse
