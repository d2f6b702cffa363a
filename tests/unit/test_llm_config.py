"""The `llm` config: every field's validation, and its mapping onto vLLM's flags and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_modeldeploy.config import ConfigError, LlmConfig, export_config, parse_config
from jupyter_modeldeploy.config.llm import VLLM_LORA_RANKS
from jupyter_modeldeploy.engines.base import EngineSettings, LaunchContext
from jupyter_modeldeploy.engines.llm import (
    CPU,
    CUDA,
    ENGINE,
    VLLM_MODULE,
    Device,
    device_notes,
    lora_names,
    sleep_level,
    vllm_args,
    vllm_env,
)


def make(**fields: object) -> LlmConfig:
    """A valid config with the given fields."""
    data: dict[str, object] = {"kind": "llm", "name": "tiny", "model": "/models/tiny"}
    data.update(fields)
    config = parse_config(data)
    assert isinstance(config, LlmConfig)
    return config


def flag(args: list[str], name: str) -> str | None:
    """The value after a flag, or None when the flag is absent."""
    if name not in args:
        return None
    return args[args.index(name) + 1]


def errors_of(**fields: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        make(**fields)
    return {e["field"]: e["message"] for e in info.value.errors}


# --- defaults -------------------------------------------------------------------------------


def test_defaults_map_to_a_minimal_command_line() -> None:
    args = vllm_args(make())
    assert args[:4] == ["--model", "/models/tiny", "--served-model-name", "tiny"]
    assert flag(args, "--tokenizer-mode") == "auto"
    assert flag(args, "--dtype") == "auto"
    assert flag(args, "--load-format") == "auto"
    assert flag(args, "--kv-cache-dtype") == "auto"
    assert flag(args, "--tensor-parallel-size") == "1"
    assert flag(args, "--pipeline-parallel-size") == "1"
    assert flag(args, "--gpu-memory-utilization") == "0.9"
    for absent in (
        "--trust-remote-code",
        "--enable-lora",
        "--enable-log-requests",
        "--enforce-eager",
        "--enable-sleep-mode",
        "--max-model-len",
        "--seed",
        "--block-size",
        "--quantization",
        "--kv-offloading-size",
        "--max-cudagraph-capture-size",
        "--api-key",
        "--host",
        "--port",
    ):
        assert absent not in args
    assert make().notices() == []


# --- Model group ----------------------------------------------------------------------------


def test_model_group_fields() -> None:
    args = vllm_args(
        make(
            trust_remote_code=True,
            revision="v1",
            code_revision="c1",
            max_model_len=512,
            tokenizer="/tok",
            tokenizer_revision="t1",
        )
    )
    assert "--trust-remote-code" in args
    assert flag(args, "--revision") == "v1"
    assert flag(args, "--code-revision") == "c1"
    assert flag(args, "--max-model-len") == "512"
    assert flag(args, "--tokenizer") == "/tok"
    assert flag(args, "--tokenizer-revision") == "t1"


def test_model_is_required_and_not_empty() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"kind": "llm", "name": "x"})
    assert "model" in str(info.value)
    assert "model" in errors_of(model="")


def test_max_model_len_must_be_positive() -> None:
    assert "max_model_len" in errors_of(max_model_len=0)


def test_tokenizer_mode_slow_is_sent_as_hf_with_a_notice() -> None:
    config = make(tokenizer_mode="slow")
    assert flag(vllm_args(config), "--tokenizer-mode") == "hf"
    assert any("'hf'" in note for note in config.notices())
    assert "tokenizer_mode" in errors_of(tokenizer_mode="mistral")


# --- LoRA -----------------------------------------------------------------------------------


def test_lora_fields() -> None:
    config = make(
        enable_lora=True,
        lora_modules=["sql=/adapters/sql", "chat=/adapters/chat"],
        max_loras=2,
        max_lora_rank=8,
        lora_dtype="bfloat16",
        max_cpu_loras=4,
    )
    args = vllm_args(config)
    assert "--enable-lora" in args
    start = args.index("--lora-modules") + 1
    assert args[start : start + 2] == ["sql=/adapters/sql", "chat=/adapters/chat"]
    assert flag(args, "--max-loras") == "2"
    assert flag(args, "--max-lora-rank") == "8"
    assert flag(args, "--lora-dtype") == "bfloat16"
    assert flag(args, "--max-cpu-loras") == "4"
    assert lora_names(config) == ["sql", "chat"]


def test_lora_flags_absent_without_enable_lora() -> None:
    args = vllm_args(make(max_loras=3, max_lora_rank=64))
    assert "--max-loras" not in args and "--max-lora-rank" not in args


def test_lora_modules_need_enable_lora() -> None:
    assert "enable_lora" in " ".join(errors_of(lora_modules=["a=/p"]).values())


@pytest.mark.parametrize("bad", ["noequals", "=path", "name=", "a b=/p", "x=/p q"])
def test_lora_modules_must_be_name_equals_path(bad: str) -> None:
    assert "name=path" in errors_of(enable_lora=True, lora_modules=[bad])["lora_modules"]


def test_lora_module_names_unique() -> None:
    assert "unique" in errors_of(enable_lora=True, lora_modules=["a=/p", "a=/q"])["lora_modules"]


@pytest.mark.parametrize("rank", VLLM_LORA_RANKS)
def test_allowed_lora_ranks(rank: int) -> None:
    assert flag(vllm_args(make(enable_lora=True, max_lora_rank=rank)), "--max-lora-rank") == str(rank)


@pytest.mark.parametrize("rank", [0, 2, 4, 7, 100, 1024])
def test_rejected_lora_rank_lists_vllms_allowed_values(rank: int) -> None:
    message = errors_of(max_lora_rank=rank)["max_lora_rank"]
    assert "1, 8, 16, 32, 64, 128, 256, 320, 512" in message
    assert str(rank) in message


def test_lora_rank_enum_is_in_the_schema() -> None:
    schema = LlmConfig.model_json_schema()
    assert schema["properties"]["max_lora_rank"]["enum"] == list(VLLM_LORA_RANKS)


def test_lora_dtype_float32_rejected_with_the_allowed_values() -> None:
    message = errors_of(lora_dtype="float32")["lora_dtype"]
    assert "auto, float16 or bfloat16" in message
    for ok in ("auto", "float16", "bfloat16"):
        assert flag(vllm_args(make(enable_lora=True, lora_dtype=ok)), "--lora-dtype") == ok


def test_max_loras_and_max_cpu_loras() -> None:
    assert "max_loras" in errors_of(max_loras=0)
    assert "max_cpu_loras" in errors_of(max_cpu_loras=0)
    assert "at least max_loras" in " ".join(errors_of(max_loras=4, max_cpu_loras=2).values())


def test_lora_extra_vocab_size_accepted_with_a_notice_and_not_sent() -> None:
    config = make(enable_lora=True, lora_extra_vocab_size=256)
    assert not any("vocab" in a for a in vllm_args(config))
    assert any("lora_extra_vocab_size has no effect" in n for n in config.notices())
    assert "lora_extra_vocab_size" in errors_of(lora_extra_vocab_size=-1)
    assert make(lora_extra_vocab_size=0).notices() == []


# --- General --------------------------------------------------------------------------------


def test_boolean_switches() -> None:
    args = vllm_args(
        make(
            disable_log_stats=True,
            enforce_eager=True,
            disable_custom_all_reduce=True,
            disable_log_requests=False,
        )
    )
    for present in (
        "--disable-log-stats",
        "--enforce-eager",
        "--disable-custom-all-reduce",
        "--enable-log-requests",
    ):
        assert present in args
    assert any("turns off vLLM's own metrics" in n for n in make(disable_log_stats=True).notices())
    # the old flag name is never sent: vLLM 0.32 no longer has it
    assert "--disable-log-requests" not in args
    assert "--enable-log-requests" not in vllm_args(make(disable_log_requests=True))


@pytest.mark.parametrize("value", ["auto", "pt", "safetensors", "npcache", "dummy"])
def test_load_format(value: str) -> None:
    assert flag(vllm_args(make(load_format=value)), "--load-format") == value


@pytest.mark.parametrize("value", ["auto", "half", "float16", "bfloat16", "float", "float32"])
def test_dtype(value: str) -> None:
    assert flag(vllm_args(make(dtype=value)), "--dtype") == value


def test_enumerated_fields_reject_other_values() -> None:
    assert "load_format" in errors_of(load_format="gguf-ish")
    assert "dtype" in errors_of(dtype="int8")
    assert "kv_cache_dtype" in errors_of(kv_cache_dtype="fp8_e4m3")
    assert "block_size" in errors_of(block_size=24)


def test_kv_cache_dtype() -> None:
    assert flag(vllm_args(make(kv_cache_dtype="fp8_e5m2")), "--kv-cache-dtype") == "fp8_e5m2"


def test_parallel_and_scheduler_numbers() -> None:
    args = vllm_args(
        make(
            pipeline_parallel_size=2,
            tensor_parallel_size=2,
            max_parallel_loading_workers=3,
            block_size=32,
            seed=7,
            gpu_memory_utilization=0.5,
            max_num_batched_tokens=2048,
            max_num_seqs=16,
            quantization="fp8",
            max_log_len=100,
        )
    )
    assert flag(args, "--pipeline-parallel-size") == "2"
    assert flag(args, "--tensor-parallel-size") == "2"
    assert flag(args, "--max-parallel-loading-workers") == "3"
    assert flag(args, "--block-size") == "32"
    assert flag(args, "--seed") == "7"
    assert flag(args, "--gpu-memory-utilization") == "0.5"
    assert flag(args, "--max-num-batched-tokens") == "2048"
    assert flag(args, "--max-num-seqs") == "16"
    assert flag(args, "--quantization") == "fp8"
    assert flag(args, "--max-log-len") == "100"


@pytest.mark.parametrize(
    "field,value",
    [
        ("pipeline_parallel_size", 0),
        ("tensor_parallel_size", 0),
        ("max_parallel_loading_workers", 0),
        ("seed", -1),
        ("gpu_memory_utilization", 0),
        ("gpu_memory_utilization", 1.5),
        ("max_num_batched_tokens", 0),
        ("max_num_seqs", 0),
        ("max_log_len", -1),
        ("swap_space_gib", -1),
        ("max_paddings", -1),
        ("max_context_len_to_capture", 0),
        ("max_concurrent_requests", 0),
    ],
)
def test_numeric_bounds(field: str, value: object) -> None:
    assert field in errors_of(**{field: value})


def test_quantization_must_be_a_method_vllm_knows() -> None:
    message = errors_of(quantization="nonsense")["quantization"]
    assert "awq" in message and "gptq" in message
    assert flag(vllm_args(make(quantization="awq")), "--quantization") == "awq"


def test_parallel_size_needs_enough_listed_gpus() -> None:
    message = " ".join(errors_of(gpus=[0], tensor_parallel_size=2).values())
    assert "needs 2 GPUs" in message
    make(gpus=[0, 1], tensor_parallel_size=2)
    make(gpus="auto", tensor_parallel_size=4)


def test_swap_space_is_sent_as_kv_offloading_on_gpus_and_dropped_on_cpu() -> None:
    config = make(swap_space_gib=4)
    assert flag(vllm_args(config, CUDA), "--kv-offloading-size") == "4"
    assert "--swap-space" not in vllm_args(config, CUDA)
    assert "--kv-offloading-size" not in vllm_args(config, CPU)
    assert any("--kv-offloading-size" in n for n in config.notices())
    assert any("swap_space_gib has no effect" in n for n in device_notes(config, CPU))
    assert flag(vllm_args(make(swap_space_gib=1.5)), "--kv-offloading-size") == "1.5"


def test_max_paddings_accepted_with_a_notice_and_not_sent() -> None:
    config = make(max_paddings=256)
    assert not any("padding" in a for a in vllm_args(config))
    assert any("max_paddings has no effect" in n for n in config.notices())


def test_max_context_len_to_capture_maps_to_cudagraph_capture_size() -> None:
    config = make(max_context_len_to_capture=256)
    args = vllm_args(config)
    assert flag(args, "--max-cudagraph-capture-size") == "256"
    assert "--max-seq-len-to-capture" not in args
    assert any("--max-cudagraph-capture-size" in n for n in config.notices())


def test_max_concurrent_requests_is_the_gateways_not_vllms() -> None:
    assert not any("concurrent" in a for a in vllm_args(make(max_concurrent_requests=3)))


# --- common fields --------------------------------------------------------------------------


def test_log_settings() -> None:
    assert flag(vllm_args(make()), "--uvicorn-log-level") == "info"
    assert vllm_env(make())["VLLM_LOGGING_LEVEL"] == "INFO"
    assert flag(vllm_args(make(log_level="warning")), "--uvicorn-log-level") == "warning"
    debug = make(debug=True, log_level="error")
    assert flag(vllm_args(debug), "--uvicorn-log-level") == "debug"
    assert vllm_env(debug)["VLLM_LOGGING_LEVEL"] == "DEBUG"
    quiet = make(disable_logs=True)
    assert "--disable-uvicorn-access-log" in vllm_args(quiet)
    assert vllm_env(quiet)["VLLM_LOGGING_LEVEL"] == "ERROR"


def test_sleep_mode_for_universal_memory_on_gpus() -> None:
    assert sleep_level(make()) is None
    assert sleep_level(make(cpu_offload=True)) == 1
    assert sleep_level(make(disk_swap=True)) == 2
    for config in (make(cpu_offload=True), make(disk_swap=True)):
        assert "--enable-sleep-mode" in vllm_args(config, CUDA)
        assert vllm_env(config, CUDA)["VLLM_SERVER_DEV_MODE"] == "1"
    assert "--enable-sleep-mode" not in vllm_args(make(), CUDA)
    assert "VLLM_SERVER_DEV_MODE" not in vllm_env(make(), CUDA)


def test_no_sleep_mode_on_the_cpu_build() -> None:
    config = make(cpu_offload=True)
    assert "--enable-sleep-mode" not in vllm_args(config, CPU)
    assert "VLLM_SERVER_DEV_MODE" not in vllm_env(config, CPU)
    assert any("no sleep mode" in n for n in device_notes(config, CPU))


def test_disk_swap_excludes_cpu_offload() -> None:
    assert "disk_swap" in " ".join(errors_of(cpu_offload=True, disk_swap=True).values())


def test_memory_budget_on_gpus() -> None:
    gpu = Device("cuda", gpu_memory_gib=80)
    # within the GPU: a smaller memory fraction
    assert flag(vllm_args(make(max_cuda_memory_gib=20), gpu), "--gpu-memory-utilization") == "0.25"
    # beyond it: the surplus lives in CPU RAM
    args = vllm_args(make(max_cuda_memory_gib=100, gpu_memory_utilization=0.9), gpu)
    assert flag(args, "--gpu-memory-utilization") == "0.9"
    assert flag(args, "--cpu-offload-gb") == "28"
    # split over the GPUs of a tensor-parallel deployment
    args = vllm_args(make(max_cuda_memory_gib=40, tensor_parallel_size=2), gpu)
    assert flag(args, "--gpu-memory-utilization") == "0.25"
    # unknown GPU size: the fraction as configured, and a note
    config = make(max_cuda_memory_gib=20)
    assert flag(vllm_args(config, CUDA), "--gpu-memory-utilization") == "0.9"
    assert any("GPU memory unknown" in n for n in device_notes(config, CUDA))


def test_cpu_environment() -> None:
    env = vllm_env(make(), CPU)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert vllm_env(make(max_cuda_memory_gib=3.7), CPU)["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert vllm_env(make(max_cuda_memory_gib=0.5), CPU)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in vllm_env(make(), CUDA)


def test_cuda_memory_min_threshold_has_no_effect_on_vllm() -> None:
    config = make(cuda_memory_min_threshold_kb=64)
    assert any("cuda_memory_min_threshold_kb has no effect" in n for n in config.notices())


def test_gpus_list_sets_cuda_visible_devices() -> None:
    assert vllm_env(make(gpus=[2, 0]))["CUDA_VISIBLE_DEVICES"] == "2,0"
    assert "CUDA_VISIBLE_DEVICES" not in vllm_env(make())


def test_secrets_go_through_the_environment_only(tmp_path: Path) -> None:
    config = make(hf_token="hf_secret_value", api_key="user-key")
    plan = ENGINE.plan(config, LaunchContext(8123, "engine-key", tmp_path, EngineSettings(vllm_python="/py")))
    assert plan.env["VLLM_API_KEY"] == "engine-key"
    assert plan.env["HF_TOKEN"] == "hf_secret_value"
    assert sorted(plan.secrets) == ["engine-key", "hf_secret_value"]
    joined = " ".join(plan.argv)
    assert "engine-key" not in joined and "hf_secret" not in joined and "user-key" not in joined
    assert "hf_token" not in export_config(config)


def test_user_env_is_merged_last_and_keeps_its_cache_folders(tmp_path: Path) -> None:
    config = make(env={"VLLM_CPU_KVCACHE_SPACE": "6", "VLLM_CACHE_ROOT": "/mine", "FOO": "bar"})
    env = vllm_env(config, CPU, work_dir=tmp_path)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "6"
    assert env["VLLM_CACHE_ROOT"] == "/mine"
    assert env["FOO"] == "bar"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torchinductor-cache")
    inherited = vllm_env(make(), CPU, work_dir=tmp_path, inherited={"TORCHINDUCTOR_CACHE_DIR": "/srv"})
    assert "TORCHINDUCTOR_CACHE_DIR" not in inherited
    assert inherited["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm-cache")


def test_runtime_lora_updating_with_enable_lora() -> None:
    assert vllm_env(make(enable_lora=True))["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in vllm_env(make())


# --- the plan -------------------------------------------------------------------------------


def test_plan(tmp_path: Path) -> None:
    config = make(enable_lora=True, lora_modules=["sql=/a/sql"], lora_extra_vocab_size=16, enforce_eager=True)
    settings = EngineSettings(vllm_python="/opt/vllm/bin/python", extra={"vllm_device": "cpu"})
    plan = ENGINE.plan(config, LaunchContext(port=9000, engine_key="k", work_dir=tmp_path, settings=settings))
    assert plan.argv[:3] == ["/opt/vllm/bin/python", "-m", VLLM_MODULE]
    assert flag(plan.argv, "--host") == "127.0.0.1"
    assert flag(plan.argv, "--port") == "9000"
    assert flag(plan.argv, "--served-model-name") == "tiny"
    assert plan.models == ["tiny", "sql"]
    assert plan.health_path == "/health"
    assert plan.metrics_path == "/metrics"
    assert plan.stream_usage is True
    assert plan.engine_requires_key is True
    assert plan.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert any("lora_extra_vocab_size" in n for n in plan.notes)
    assert ENGINE.kind == "llm"


def test_plan_on_a_gpu_host(tmp_path: Path) -> None:
    settings = EngineSettings(vllm_python="/py", extra={"vllm_device": "cuda"})
    plan = ENGINE.plan(make(cpu_offload=True, gpus=[1]), LaunchContext(9001, "k", tmp_path, settings))
    assert "--enable-sleep-mode" in plan.argv
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in plan.env


def test_plan_rejects_other_kinds(tmp_path: Path) -> None:
    other = parse_config({"kind": "llamacpp", "name": "g", "model": "/m.gguf"})
    with pytest.raises(TypeError):
        ENGINE.plan(other, LaunchContext(1, "k", tmp_path, EngineSettings(vllm_python="/py")))


def test_config_round_trips_through_export() -> None:
    config = make(
        enable_lora=True,
        lora_modules=["a=/p"],
        max_lora_rank=32,
        tokenizer_mode="slow",
        swap_space_gib=2,
        max_paddings=8,
        max_context_len_to_capture=64,
        quantization="awq",
    )
    again = parse_config(export_config(config))
    assert again == config
    assert vllm_args(again) == vllm_args(config)


def test_sleep_and_wake_calls() -> None:
    from jupyter_modeldeploy.engines.llm import sleep_calls, wake_calls

    assert sleep_calls(make(), CUDA) == [] and wake_calls(make(), CUDA) == []
    level1 = make(cpu_offload=True)
    assert [(c.method, c.path, c.params) for c in sleep_calls(level1, CUDA)] == [
        ("POST", "/sleep", {"level": "1", "mode": "wait"})
    ]
    assert [c.path for c in wake_calls(level1, CUDA)] == ["/wake_up"]
    level2 = make(disk_swap=True)
    assert sleep_calls(level2, CUDA)[0].params["level"] == "2"
    wake = wake_calls(level2, CUDA)
    assert [c.path for c in wake] == ["/wake_up", "/collective_rpc", "/reset_prefix_cache"]
    assert wake[1].json == {"method": "reload_weights"}
    # the CPU build has no sleep mode: nothing to call
    assert sleep_calls(level1, CPU) == [] and wake_calls(level2, CPU) == []


def test_lora_name_may_not_shadow_the_served_model() -> None:
    message = " ".join(errors_of(enable_lora=True, lora_modules=["tiny=/a"]).values())
    assert "named like the deployment" in message


def test_engine_sleep_calls_follow_the_device(tmp_path: Path) -> None:
    config = make(disk_swap=True)
    gpu = LaunchContext(1, "k", tmp_path, EngineSettings(vllm_python="/py", extra={"vllm_device": "cuda"}))
    cpu = LaunchContext(1, "k", tmp_path, EngineSettings(vllm_python="/py", extra={"vllm_device": "cpu"}))
    on_gpu, on_cpu = ENGINE.plan(config, gpu), ENGINE.plan(config, cpu)  # resolved once, at launch
    assert [c.path for c in on_gpu.sleep_calls] == ["/sleep"]
    assert on_gpu.wake_calls[0].path == "/wake_up"
    assert on_cpu.sleep_calls == [] and on_cpu.wake_calls == []


def test_availability_names_the_module_the_plan_runs(tmp_path: Path) -> None:
    """What `GET /modeldeploy/engines` says vLLM runs is what a launch runs, in the Python install-engine made."""
    settings = EngineSettings(vllm_python="/venvs/vllm/bin/python")
    status = ENGINE.availability(settings)
    plan = ENGINE.plan(make(), LaunchContext(8123, "engine-key", tmp_path, settings))
    assert status["available"] and status["python"] == plan.argv[0]
    assert plan.argv[1:3] == ["-m", status["program"]]


def test_availability_finds_the_environment_install_engine_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the setting, availability and a launch both find the Python `install-engine llm` made."""
    made = tmp_path / "vllm-env" / "bin" / "python"
    monkeypatch.setattr("jupyter_modeldeploy.engines.llm.find_vllm_python", lambda: made)
    settings = EngineSettings()
    status = ENGINE.availability(settings)
    plan = ENGINE.plan(make(), LaunchContext(8123, "engine-key", tmp_path, settings))
    assert status["available"] and status["python"] == str(made) == plan.argv[0]


def test_adapters_are_the_engines_to_read_and_write() -> None:
    from jupyter_modeldeploy.engines import get_engine

    engine = get_engine("llm")
    off = parse_config({"kind": "llm", "name": "a", "model": "m"})
    assert engine.adapters(off) is None, "adapters off: none change at runtime"
    on = parse_config({"kind": "llm", "name": "a", "model": "m", "enable_lora": True, "lora_modules": ["sql=/p/sql"]})
    served = engine.adapters(on)
    assert served == {"sql": "/p/sql"}
    served["chat"] = "/p/chat"
    again = parse_config({**export_config(on), **engine.with_adapters(on, served)})
    assert engine.adapters(again) == {"sql": "/p/sql", "chat": "/p/chat"}
    assert engine.model_tasks(again) == {"a": "chat", "sql": "chat", "chat": "chat"}  # served under its name
    assert get_engine("llamacpp").adapters(parse_config({"kind": "llamacpp", "name": "b", "model": "/x.gguf"})) is None


def test_vllm_schedules_by_the_priority_the_gateway_sets() -> None:
    args = vllm_args(make())
    assert args[args.index("--scheduling-policy") + 1] == "priority"
