"""Config models: every OPTIONS.md field, its group, validation errors, export/import/clone."""

from __future__ import annotations

import json

import pytest

from jupyter_modeldeploy.config import (
    CONFIG_CLASSES,
    ConfigError,
    all_schemas,
    clone_config,
    export_config,
    parse_config,
)

COMMON = {
    "Instance": ["name", "project", "gpus", "route"],
    "Placement": ["placement"],
    "General": ["hf_token", "api_key", "env", "debug", "log_level", "disable_logs", "cpu_offload", "disk_swap",
                "max_cuda_memory_gib", "cuda_memory_min_threshold_kb"],
    "Idle": ["idle_time_limit_hours", "last_action_report_interval_s"],
}
# Every option of ../shared/OPTIONS.md, by kind and form group.
OPTIONS = {
    "llm": {
        "Model": ["model", "trust_remote_code", "revision", "code_revision", "max_model_len", "tokenizer",
                  "tokenizer_revision", "tokenizer_mode"],
        "LoRA": ["enable_lora", "lora_modules", "max_loras", "max_lora_rank", "lora_extra_vocab_size", "lora_dtype",
                 "max_cpu_loras"],
        "General": ["disable_log_stats", "enforce_eager", "disable_custom_all_reduce", "disable_log_requests",
                    "load_format", "dtype", "kv_cache_dtype", "pipeline_parallel_size", "tensor_parallel_size",
                    "max_parallel_loading_workers", "block_size", "seed", "swap_space_gib", "gpu_memory_utilization",
                    "max_num_batched_tokens", "max_num_seqs", "max_paddings", "quantization",
                    "max_context_len_to_capture", "max_log_len"],
    },
    "llamacpp": {
        "Model": ["model", "model_alias", "cli_args", "verbose", "no_mmap", "cont_batching", "embedding", "n_gpu_layers"],
        "Sampling defaults": ["repeat_penalty", "temperature", "top_k", "top_p", "min_p", "xtc_probability",
                              "xtc_threshold", "typical_p", "repeat_last_n"],
        "Context": ["ctx_size", "rope_freq_base", "rope_scaling", "rope_freq_scale"],
        "YaRN": ["yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow"],
        "Performance": ["threads", "threads_batch", "parallel", "max_concurrent_requests"],
        "GPUs": ["tensor_split", "split_mode", "main_gpu", "numa"],
    },
    "embedding": {"Models": ["models"]},
}
EMBEDDING_ENTRY = ["model", "task", "revision", "tokenization_workers", "dtype", "pooling", "max_concurrent_requests",
                   "max_batch_tokens", "max_batch_requests", "max_client_batch_size", "payload_limit_bytes"]
MINIMAL = {
    "llm": {"kind": "llm", "name": "a", "model": "org/model"},
    "llamacpp": {"kind": "llamacpp", "name": "a", "model": "/m.gguf"},
    "embedding": {"kind": "embedding", "name": "a", "models": [{"model": "/models/minilm"}]},
}


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_every_option_is_a_field_in_its_group_with_a_description(kind: str) -> None:
    schema = all_schemas()[kind]
    props = schema["properties"]
    expected = {**{g: list(f) for g, f in COMMON.items()}}
    for group, fields in OPTIONS[kind].items():
        expected.setdefault(group, []).extend(fields)
    for group, fields in expected.items():
        for name in fields:
            assert name in props, f"{kind}: {name} missing"
            assert props[name].get("group") == group, f"{kind}.{name} in {props[name].get('group')}, not {group}"
    for name, prop in props.items():
        assert prop.get("description"), f"{kind}.{name} has no description"
    assert schema["properties"]["schema_version"]["const"] == 1 or schema["properties"]["schema_version"]["default"] == 1
    assert schema["x-group-order"][0] == "Instance"


def test_embedding_entry_has_every_option() -> None:
    entry = all_schemas()["embedding"]["$defs"]["EmbeddingModelEntry"]["properties"]
    for name in EMBEDDING_ENTRY:
        assert name in entry and entry[name]["description"]


def test_secrets_are_password_fields() -> None:
    for kind in CONFIG_CLASSES:
        props = all_schemas()[kind]["properties"]
        for name in ("hf_token", "api_key"):
            assert props[name]["format"] == "password" and props[name]["writeOnly"] is True


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_defaults_round_trip_through_export_and_import(kind: str) -> None:
    config = parse_config(MINIMAL[kind])
    exported = export_config(config)
    assert parse_config(json.loads(json.dumps(exported))) == config


def test_export_leaves_secrets_out_unless_asked() -> None:
    config = parse_config({**MINIMAL["llamacpp"], "hf_token": "hf_abc", "api_key": "sk-123"})
    plain = export_config(config)
    assert "hf_token" not in plain and "api_key" not in plain
    assert "hf_abc" not in json.dumps(plain) and "sk-123" not in json.dumps(plain)
    full = export_config(config, include_secrets=True)
    assert full["hf_token"] == "hf_abc" and full["api_key"] == "sk-123"
    assert "hf_abc" not in repr(config) and "sk-123" not in str(config)


def test_clone_gets_new_name_and_no_fixed_route() -> None:
    config = parse_config({**MINIMAL["llamacpp"], "route": "fixed", "temperature": 0.1})
    clone = clone_config(config, "b")
    assert clone.name == "b" and clone.route == "" and clone.temperature == 0.1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ({"bogus": 1}, "bogus", "unknown field"),
        ({"top_p": 2}, "top_p", "less than or equal"),
        ({"parallel": 0}, "parallel", "greater than or equal"),
        ({"split_mode": "diag"}, "split_mode", "'none', 'layer' or 'row'"),
        ({"name": "has space"}, "name", "use only letters, digits, '.', '_' and '-'"),
        ({"route": "a/b"}, "route", "leave it empty, or use only letters"),
        ({"tensor_split": "3;2"}, "tensor_split", "comma-separated"),
        ({"cli_args": "--port 1"}, "cli_args", "--port"),
        ({"cli_args": "'unclosed"}, "cli_args", "not a valid argument string"),
        ({"env": {"1BAD": "x"}}, "env", "1BAD"),
        ({"gpus": [0, 0]}, "gpus", "repeat"),
        ({"gpus": "some"}, "gpus", ""),
        ({"cpu_offload": True, "disk_swap": True}, "(root)", "disk_swap requires cpu_offload"),
        ({"idle_time_limit_hours": -1}, "idle_time_limit_hours", "greater than or equal"),
        ({"schema_version": 2}, "schema_version", "unsupported version"),
    ],
)
def test_llamacpp_validation_errors_name_the_field(data: dict, field: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL["llamacpp"], **data})
    errors = info.value.errors
    assert any(e["field"] == field and text in e["message"] for e in errors), errors
    # Messages are words: never a regular expression.
    assert not any("pattern" in e["message"] or "^" in e["message"] for e in errors), errors


def test_choice_errors_list_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL["llamacpp"], "numa": "everywhere"})
    assert info.value.errors[0]["allowed"] == ["distribute", "isolate", "numactl"]


def test_kind_errors() -> None:
    for data, message in (({"name": "a"}, "missing"), ({"kind": "gpt", "name": "a"}, "unknown kind")):
        with pytest.raises(ConfigError) as info:
            parse_config(data)
        assert info.value.errors[0]["field"] == "kind" and message in info.value.errors[0]["message"]
    for bad in ("[1, 2]", "{not json"):
        with pytest.raises(ConfigError):
            parse_config(bad)


def test_embedding_entries_validate_and_names_are_unique() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL["embedding"], "models": [{"model": "/a/m"}, {"model": "/b/m"}]})
    assert "unique" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL["embedding"], "models": [{"model": "/a/m", "pooling": "max"}]})
    assert info.value.errors[0]["field"] == "models.0.pooling"
    with pytest.raises(ConfigError):
        parse_config({**MINIMAL["embedding"], "models": []})
    rerank = parse_config({**MINIMAL["embedding"], "models": [{"model": "/a/ce", "task": "rerank"}]})
    assert rerank.models[0].task == "rerank"  # type: ignore[attr-defined]
    assert parse_config(MINIMAL["embedding"]).models[0].task == "embed"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL["embedding"], "models": [{"model": "/a/ce", "task": "rerank", "pooling": "cls"}]})
    assert "pooling applies to embedding models" in str(info.value)


def test_idle_limit_in_seconds() -> None:
    config = parse_config({**MINIMAL["llamacpp"], "idle_time_limit_hours": 0.001})
    assert config.idle_time_limit_s == pytest.approx(3.6)
