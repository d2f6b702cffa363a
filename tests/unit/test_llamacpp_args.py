"""The llama-server command line: every option reaches its flag; cli_args replaces the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_modeldeploy.config import LlamaCppConfig, parse_config
from jupyter_modeldeploy.engines.base import EngineSettings, EngineUnavailable, LaunchContext
from jupyter_modeldeploy.engines.llamacpp import ENGINE, FALLBACK_NOTE, llamacpp_args, model_alias

FULL = {
    "kind": "llamacpp", "name": "full", "model": "/models/x.gguf", "verbose": True, "no_mmap": True,
    "cont_batching": False, "embedding": True, "pooling": "cls", "n_gpu_layers": 20, "temperature": 0.5,
    "top_k": 7, "top_p": 0.9, "min_p": 0.1, "xtc_probability": 0.2, "xtc_threshold": 0.3, "typical_p": 0.8,
    "repeat_penalty": 1.1, "repeat_last_n": 32, "ctx_size": 1024, "rope_freq_base": 10000, "rope_scaling": "yarn",
    "rope_freq_scale": 0.5, "yarn_ext_factor": 0.5, "yarn_attn_factor": 1.5, "yarn_beta_fast": 30,
    "yarn_beta_slow": 2, "threads": 3, "threads_batch": 5, "parallel": 6, "tensor_split": "3,2",
    "split_mode": "row", "main_gpu": 1, "numa": "distribute",
}


def flag_values(args: list[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else None
            values[arg] = nxt if nxt is not None and not nxt.startswith("--") else None
    return values


def test_every_option_maps_to_its_flag() -> None:
    config = parse_config(FULL)
    assert isinstance(config, LlamaCppConfig)
    flags = flag_values(llamacpp_args(config))
    expected = {
        "--verbose": None, "--load-mode": "none", "--no-cont-batching": None, "--embeddings": None,
        "--pooling": "cls", "--n-gpu-layers": "20", "--temp": "0.5", "--top-k": "7", "--top-p": "0.9",
        "--min-p": "0.1", "--xtc-probability": "0.2", "--xtc-threshold": "0.3", "--typical": "0.8",
        "--repeat-penalty": "1.1", "--repeat-last-n": "32", "--ctx-size": "1024", "--rope-freq-base": "10000",
        "--rope-scaling": "yarn", "--rope-freq-scale": "0.5", "--yarn-ext-factor": "0.5",
        "--yarn-attn-factor": "1.5", "--yarn-beta-fast": "30", "--yarn-beta-slow": "2", "--threads": "3",
        "--threads-batch": "5", "--parallel": "6", "--threads-http": "68", "--tensor-split": "3,2", "--split-mode": "row",
        "--main-gpu": "1", "--numa": "distribute",
    }
    assert flags == expected


def test_defaults_leave_model_values_to_the_model() -> None:
    flags = flag_values(llamacpp_args(parse_config({"kind": "llamacpp", "name": "d", "model": "/m.gguf"})))
    for absent in ("--rope-freq-base", "--rope-scaling", "--yarn-attn-factor", "--threads", "--numa", "--embeddings"):
        assert absent not in flags
    assert flags["--cont-batching"] is None and flags["--log-verbosity"] == "3"


def test_log_levels() -> None:
    base = {"kind": "llamacpp", "name": "d", "model": "/m.gguf"}
    assert "--log-verbosity" in llamacpp_args(parse_config({**base, "log_level": "error"}))
    assert flag_values(llamacpp_args(parse_config({**base, "disable_logs": True})))["--log-verbosity"] == "1"
    assert "--verbose" in llamacpp_args(parse_config({**base, "debug": True}))


def test_cli_args_replace_every_engine_field() -> None:
    config = parse_config({**FULL, "cli_args": "--ctx-size 512 -np 2"})
    assert llamacpp_args(config) == ["--ctx-size", "512", "-np", "2"]


def test_alias_defaults_to_the_file_name() -> None:
    assert model_alias(parse_config({"kind": "llamacpp", "name": "d", "model": "/a/b/Smol.Q4.gguf"})) == "Smol.Q4"
    assert model_alias(parse_config({"kind": "llamacpp", "name": "d", "model": "/m.gguf", "model_alias": "x"})) == "x"


def test_plan_keeps_secrets_off_the_command_line(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    server = tmp_path / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    config = parse_config({"kind": "llamacpp", "name": "p", "model": str(gguf), "hf_token": "hf_secret", "gpus": [1, 2],
                           "env": {"EXTRA": "1"}})
    ctx = LaunchContext(port=1234, engine_key="engine-key-xyz", work_dir=tmp_path,
                        settings=EngineSettings(llamacpp_server=str(server)))
    plan = ENGINE.plan(config, ctx)
    assert plan.argv[0] == str(server)
    assert "hf_secret" not in " ".join(plan.argv) and "engine-key-xyz" not in " ".join(plan.argv)
    assert plan.env["HF_TOKEN"] == "hf_secret" and plan.env["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert plan.env["EXTRA"] == "1"
    assert plan.files["engine.key"].strip() == "engine-key-xyz"
    assert {"hf_secret", "engine-key-xyz"} <= set(plan.secrets)
    # llama-server's last stream event carries `timings`: no usage request, the stream stays the engine's.
    assert not plan.stream_usage and plan.metrics_path == "/metrics"


def test_fallback_plan_says_what_it_lacks(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    config = parse_config({"kind": "llamacpp", "name": "p", "model": str(gguf)})
    ctx = LaunchContext(port=1, engine_key="k" * 20, work_dir=tmp_path,
                        settings=EngineSettings(llamacpp_engine="llama-cpp-python", llamacpp_python="/usr/bin/python3"))
    plan = ENGINE.plan(config, ctx)
    assert plan.argv[:3] == ["/usr/bin/python3", "-m", "llama_cpp.server"]
    assert plan.notes == [FALLBACK_NOTE] and plan.metrics_path is None
    assert plan.env["API_KEY"] == "k" * 20 and "k" * 20 not in plan.argv
    forced = LaunchContext(port=1, engine_key="k", work_dir=tmp_path,
                           settings=EngineSettings(llamacpp_engine="llama-server", llamacpp_server=str(tmp_path / "no")))
    with pytest.raises(EngineUnavailable):
        ENGINE.plan(config, forced)
