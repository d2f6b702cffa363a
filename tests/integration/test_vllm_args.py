"""The command lines the `llm` engine generates, parsed by vLLM's own argument parser.

A flag vLLM renamed or dropped fails here, not at a user's launch. vLLM's allowed values
for the options our config enumerates are compared with the config's, so neither side can
drift. One subprocess in the vLLM environment parses every case (about 25 s of imports).
"""

from __future__ import annotations

import json
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest

from jupyter_modeldeploy.config import LlmConfig, parse_config
from jupyter_modeldeploy.config.llm import VLLM_LORA_RANKS, VLLM_QUANTIZATIONS
from jupyter_modeldeploy.engines.llm import CPU, CUDA, Device, vllm_args
from tests.support.vllm_runtime import require_vllm_python

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

CHECK_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "vllm_cli_check.py"
BUDGET_GPU = Device("cuda", gpu_memory_gib=24)


def cfg(**fields: Any) -> LlmConfig:
    config = parse_config({"kind": "llm", "name": "m", "model": "/models/m", **fields})
    assert isinstance(config, LlmConfig)
    return config


#: Configs whose command lines must parse; together they set every field of the llm kind.
CONFIGS: dict[str, LlmConfig] = {
    "defaults": cfg(),
    "model-group": cfg(
        trust_remote_code=True,
        revision="main",
        code_revision="main",
        max_model_len=512,
        tokenizer="/models/tok",
        tokenizer_revision="main",
        tokenizer_mode="slow",
    ),
    "lora": cfg(
        enable_lora=True,
        lora_modules=["a=/adapters/a", "b=/adapters/b"],
        max_loras=2,
        max_lora_rank=8,
        lora_extra_vocab_size=256,
        lora_dtype="bfloat16",
        max_cpu_loras=4,
    ),
    "lora-defaults": cfg(enable_lora=True),
    "general": cfg(
        disable_log_stats=True,
        enforce_eager=True,
        disable_custom_all_reduce=True,
        disable_log_requests=False,
        load_format="safetensors",
        dtype="bfloat16",
        kv_cache_dtype="fp8_e5m2",
        pipeline_parallel_size=1,
        tensor_parallel_size=1,
        max_parallel_loading_workers=2,
        block_size=16,
        seed=42,
        swap_space_gib=4,
        gpu_memory_utilization=0.8,
        max_num_batched_tokens=4096,
        max_num_seqs=32,
        max_paddings=256,
        quantization="fp8",
        max_context_len_to_capture=256,
        max_log_len=200,
    ),
    "parallel": cfg(tensor_parallel_size=2, pipeline_parallel_size=2),
    "logs-debug": cfg(debug=True),
    "logs-quiet": cfg(disable_logs=True, log_level="warning"),
    "sleep-level-1": cfg(cpu_offload=True),
    "sleep-level-2": cfg(disk_swap=True),
    "budget-small": cfg(max_cuda_memory_gib=6),
    "budget-beyond-gpu": cfg(max_cuda_memory_gib=40),
    "fractional-swap": cfg(swap_space_gib=1.5),
}
for _name in typing.get_args(LlmConfig.model_fields["load_format"].annotation):
    CONFIGS[f"load-format-{_name}"] = cfg(load_format=_name)
for _name in typing.get_args(LlmConfig.model_fields["dtype"].annotation):
    CONFIGS[f"dtype-{_name}"] = cfg(dtype=_name)
for _rank in VLLM_LORA_RANKS:
    CONFIGS[f"lora-rank-{_rank}"] = cfg(enable_lora=True, max_lora_rank=_rank)
for _name in VLLM_QUANTIZATIONS:
    CONFIGS[f"quantization-{_name}"] = cfg(quantization=_name)

DEVICES: dict[str, Device] = {"cpu": CPU, "cuda": CUDA, "cuda-24g": BUDGET_GPU}


#: Flags of older vLLM releases that OPTIONS.md names: vLLM 0.32 must refuse each, or the
#: mapping to today's flags (or the "no effect" notice) is out of date.
DROPPED_FLAGS: dict[str, list[str]] = {
    "disable-log-requests": ["--disable-log-requests"],
    "swap-space": ["--swap-space", "4"],
    "max-paddings": ["--max-paddings", "256"],
    "max-seq-len-to-capture": ["--max-seq-len-to-capture", "8192"],
    "lora-extra-vocab-size": ["--enable-lora", "--lora-extra-vocab-size", "256"],
}


def all_cases() -> list[dict[str, Any]]:
    cases = [
        {"id": f"dropped-{name}", "argv": ["--model", "/models/m", *argv]}
        for name, argv in DROPPED_FLAGS.items()
    ]
    for name, config in CONFIGS.items():
        for device_name, device in DEVICES.items():
            argv = [*vllm_args(config, device), "--host", "127.0.0.1", "--port", "8000"]
            cases.append({"id": f"{name}@{device_name}", "argv": argv})
    # A replica on a Ray cluster: tensor and pipeline parallel workers on vLLM's own Ray executor.
    ray_argv = [*vllm_args(cfg(tensor_parallel_size=2, pipeline_parallel_size=2), DEVICES["cuda"], ray_executor=True),
                "--host", "10.0.0.5", "--port", "8000"]
    assert ray_argv[ray_argv.index("--distributed-executor-backend") + 1] == "ray"
    cases.append({"id": "tp2-pp2-on-ray@cuda", "argv": ray_argv})
    return cases


@pytest.fixture(scope="module")
def vllm_report() -> dict[str, Any]:
    python = require_vllm_python()
    request = json.dumps({"cases": all_cases()})
    proc = subprocess.run(
        [python, str(CHECK_SCRIPT)],
        input=request,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    marker = "@@RESULT@@"
    lines = [line for line in proc.stdout.splitlines() if line.startswith(marker)]
    assert proc.returncode == 0 and lines, (
        f"the vLLM parser check failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    report = json.loads(lines[-1][len(marker) :])
    report["by_id"] = {r["id"]: r for r in report["results"]}
    return report


def values(report: dict[str, Any], case_id: str) -> dict[str, Any]:
    result = report["by_id"][case_id]
    assert result["ok"], f"{case_id}: {result.get('error')}"
    return result["values"]


def test_every_generated_command_line_parses_and_validates(vllm_report: dict[str, Any]) -> None:
    ours = [r for r in vllm_report["results"] if not r["id"].startswith("dropped-")]
    failed = {r["id"]: r["error"] for r in ours if not r["ok"]}
    assert not failed, json.dumps(failed, indent=2)
    assert len(ours) == len(CONFIGS) * len(DEVICES) + 1  # and the Ray case


@pytest.mark.parametrize("name", sorted(DROPPED_FLAGS))
def test_vllm_refuses_the_dropped_flags(vllm_report: dict[str, Any], name: str) -> None:
    result = vllm_report["by_id"][f"dropped-{name}"]
    assert not result["ok"], f"vLLM accepts {DROPPED_FLAGS[name]} again: map the field to it"
    assert "unrecognized arguments" in result["error"] or "ambiguous" in result["error"], result["error"]


def test_vllm_is_the_pinned_version(vllm_report: dict[str, Any]) -> None:
    assert vllm_report["vllm_version"].startswith("0.32.")


def test_parsed_values_are_what_the_config_meant(vllm_report: dict[str, Any]) -> None:
    model = values(vllm_report, "model-group@cpu")
    assert model["model"] == "/models/m"
    assert model["served_model_name"] == ["m"]
    assert model["trust_remote_code"] is True
    assert model["max_model_len"] == 512
    assert model["tokenizer_mode"] == "hf"
    assert model["tokenizer"] == "/models/tok"
    assert model["port"] == 8000 and model["host"] == "127.0.0.1"

    lora = values(vllm_report, "lora@cpu")
    assert lora["enable_lora"] is True
    assert lora["max_loras"] == 2 and lora["max_lora_rank"] == 8 and lora["max_cpu_loras"] == 4
    assert lora["lora_dtype"] == "bfloat16"
    assert [(m["name"], m["path"]) for m in lora["lora_modules"]] == [
        ("a", "/adapters/a"),
        ("b", "/adapters/b"),
    ]

    general = values(vllm_report, "general@cuda")
    assert general["enable_log_requests"] is True
    assert general["enforce_eager"] is True
    assert general["disable_log_stats"] is True
    assert general["disable_custom_all_reduce"] is True
    assert general["load_format"] == "safetensors"
    assert general["dtype"] == "bfloat16"
    assert general["kv_cache_dtype"] == "fp8_e5m2"
    assert general["max_parallel_loading_workers"] == 2
    assert general["block_size"] == 16
    assert general["seed"] == 42
    assert general["kv_offloading_size"] == 4
    assert general["gpu_memory_utilization"] == 0.8
    assert general["max_num_batched_tokens"] == 4096
    assert general["max_num_seqs"] == 32
    assert general["quantization"] == "fp8"
    assert general["max_cudagraph_capture_size"] == 256
    assert general["max_log_len"] == 200
    assert values(vllm_report, "general@cpu").get("kv_offloading_size") is None

    assert values(vllm_report, "defaults@cpu")["enable_log_requests"] is False
    assert values(vllm_report, "sleep-level-1@cuda")["enable_sleep_mode"] is True
    assert values(vllm_report, "sleep-level-2@cpu")["enable_sleep_mode"] is False
    assert values(vllm_report, "budget-beyond-gpu@cuda-24g")["cpu_offload_gb"] > 0
    assert values(vllm_report, "logs-quiet@cpu")["disable_uvicorn_access_log"] is True
    assert values(vllm_report, "logs-debug@cpu")["uvicorn_log_level"] == "debug"
    assert values(vllm_report, "parallel@cuda")["tensor_parallel_size"] == 2


def test_config_choices_match_vllms(vllm_report: dict[str, Any]) -> None:
    choices = vllm_report["choices"]
    fields = LlmConfig.model_fields

    def ours(name: str) -> set[Any]:
        return set(typing.get_args(fields[name].annotation)) - {None}

    assert ours("dtype") <= set(choices["--dtype"])
    assert ours("kv_cache_dtype") <= set(choices["--kv-cache-dtype"])
    assert {"auto", "hf"} <= set(choices["--tokenizer-mode"])
    assert "slow" not in choices["--tokenizer-mode"]  # why tokenizer_mode "slow" is sent as "hf"
    assert ours("load_format") <= set(choices["--load-format"])
    assert set(choices["--lora-dtype"]) == ours("lora_dtype") - {"float32"}  # float32: rejected by our config
    assert set(choices["--max-lora-rank"]) == set(VLLM_LORA_RANKS)
    assert {"debug", "info", "warning", "error"} <= set(choices["--uvicorn-log-level"])


def test_lora_ranks_match_vllms(vllm_report: dict[str, Any]) -> None:
    assert vllm_report["lora_ranks"] == list(VLLM_LORA_RANKS)


def test_quantization_methods_match_vllms(vllm_report: dict[str, Any]) -> None:
    assert set(VLLM_QUANTIZATIONS) == set(vllm_report["quantizations"])
