"""The launch form built from each kind's JSON Schema: every field present, right widget, exact round trip."""

from __future__ import annotations

import ipywidgets as W
import pytest

from jupyter_modeldeploy.config import KINDS, config_schema, export_config, parse_config
from jupyter_modeldeploy.config.llamacpp import CLI_ARGS_KEEPS_FIELDS, CLI_ARGS_KEEPS_GROUPS
from jupyter_modeldeploy.widgets.schema_form import (
    ObjectListField,
    SchemaForm,
    field_specs,
    grouped,
    overridden_fields,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def minimal(kind: str) -> dict:
    if kind == "embedding":
        return {"kind": kind, "name": "emb", "models": [{"model": "/models/minilm"}]}
    return {"kind": kind, "name": f"{kind}-x", "model": "/models/m.gguf" if kind == "llamacpp" else "org/model"}


def filled(kind: str) -> dict:
    """A configuration that sets many fields of every widget type to non-defaults."""
    common = {
        "project": "team-a", "route": "fixed-route", "gpus": [0, 1], "env": {"A": "1", "B": "x=y"},
        "debug": True, "log_level": "warning", "max_cuda_memory_gib": 12.5, "cuda_memory_min_threshold_kb": 64,
        "idle_time_limit_hours": 0.25, "last_action_report_interval_s": 5.0, "public": False,
    }
    if kind == "llamacpp":
        return {**minimal(kind), **common, "model_alias": "smol", "verbose": True, "cont_batching": False,
                "embedding": True, "pooling": "cls", "n_gpu_layers": 12, "temperature": 0.2, "top_k": 5,
                "top_p": 0.5, "min_p": 0.1, "repeat_last_n": -1, "ctx_size": 1024, "rope_scaling": "yarn",
                "rope_freq_base": 10000.0, "yarn_ext_factor": 0.5, "yarn_beta_fast": 32.0, "threads": 2,
                "parallel": 3, "max_concurrent_requests": 9, "tensor_split": "3,2", "split_mode": "row",
                "main_gpu": 1, "numa": "isolate"}
    if kind == "llm":
        return {**minimal(kind), **common, "trust_remote_code": True, "revision": "main", "max_model_len": 2048,
                "tokenizer_mode": "slow", "enable_lora": True, "lora_modules": ["a=/lora/a", "b=/lora/b"],
                "max_loras": 2, "max_lora_rank": 64, "lora_dtype": "bfloat16", "max_cpu_loras": 4,
                "dtype": "bfloat16", "kv_cache_dtype": "fp8_e5m2", "block_size": 32, "seed": 7,
                "gpu_memory_utilization": 0.5, "quantization": "awq", "enforce_eager": True,
                "tensor_parallel_size": 2}
    return {**common, "kind": kind, "name": "emb", "threads": 2, "models": [
        {"model": "/models/minilm", "served_name": "mini", "dtype": "bfloat16", "pooling": "mean",
         "max_client_batch_size": 8, "tokenization_workers": 2},
        {"model": "/models/splade", "pooling": "splade", "payload_limit_bytes": 1000},
    ]}


@pytest.mark.parametrize("kind", KINDS)
def test_every_schema_field_is_in_the_form(kind: str) -> None:
    schema = config_schema(kind)
    form = SchemaForm(schema)
    assert set(form.fields) == set(schema["properties"])
    # Every field sits in exactly one accordion section, named after its group.
    titles = list(form.accordion.titles)
    order = schema["x-group-order"]
    assert titles == sorted(titles, key=lambda g: order.index(g) if g in order else len(order))
    shown = [c for section in form.accordion.children for c in section.children]
    assert len(shown) == len(form.fields)
    for name, f in form.fields.items():
        assert f.spec.group == schema["properties"][name].get("group")
        assert f.container in shown
        assert f.spec.description in f.help.value.replace("&#x27;", "'") or not f.spec.description


@pytest.mark.parametrize("kind", KINDS)
def test_widget_types_follow_the_schema(kind: str) -> None:
    form = SchemaForm(config_schema(kind))
    for name, f in form.fields.items():
        prop = form.schema["properties"][name]
        if prop.get("secret"):
            assert isinstance(f.input, W.Password), name
        elif prop.get("type") == "boolean":
            assert isinstance(f.input, W.Checkbox), name
        elif "enum" in prop or any("enum" in o for o in prop.get("anyOf", [])):
            assert isinstance(f.input, W.Dropdown), name
            options = [v for _, v in f.input.options]
            enum = prop.get("enum") or next(o["enum"] for o in prop["anyOf"] if "enum" in o)
            assert [v for v in options if v is not None] == enum
        elif "const" in prop:
            assert f.input.disabled, name
    # Defaults are filled in.
    defaults = {n: p["default"] for n, p in form.schema["properties"].items() if "default" in p}
    value = form.value()
    for name, default in defaults.items():
        if not form.fields[name].spec.secret:
            assert value[name] == default, name


def test_embedding_models_add_and_remove_items() -> None:
    form = SchemaForm(config_schema("embedding"))
    models = form.fields["models"]
    assert isinstance(models, ObjectListField)
    assert len(models.items) == 1  # required: one empty item to start with
    models.add_button.click()
    assert len(models.items) == 2
    entry_props = config_schema("embedding")["$defs"]["EmbeddingModelEntry"]["properties"]
    assert set(models.items[1].fields) == set(entry_props)
    models.items[0].fields["model"].value = "/m/one"
    models.items[1].fields["model"].value = "/m/two"
    models.items[1].fields["pooling"].value = "cls"
    value = form.value()["models"]
    assert [m["model"] for m in value] == ["/m/one", "/m/two"]
    assert value[1]["pooling"] == "cls" and value[0]["pooling"] is None
    models.remove_item(models.items[0])
    assert [m["model"] for m in form.value()["models"]] == ["/m/two"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["minimal", "filled"])
def test_export_of_a_filled_form_equals_the_server_export(kind: str, which: str) -> None:
    config = minimal(kind) if which == "minimal" else filled(kind)
    form = SchemaForm(config_schema(kind))
    assert form.set_value(config) == []
    value = form.value()
    assert export_config(parse_config(value)) == form.export_value()
    # And the form reproduces what it was given.
    exported = form.export_value()
    for key, expected in config.items():
        if key == "models":
            assert [{k: m[k] for k in e} for m, e in zip(exported[key], expected, strict=True)] == expected
        else:
            assert exported[key] == expected, key
    # Re-importing the export gives the same form value.
    again = SchemaForm(config_schema(kind))
    again.set_value(export_config(parse_config(value)))
    assert again.export_value() == form.export_value()


@pytest.mark.parametrize("kind", KINDS)
def test_secrets_are_password_fields_and_never_exported(kind: str) -> None:
    form = SchemaForm(config_schema(kind))
    form.set_value({**minimal(kind), "hf_token": "hf_secret", "api_key": "sk-secret"})
    assert form.value()["hf_token"] == "hf_secret" and form.value()["api_key"] == "sk-secret"
    assert "hf_token" not in form.export_value() and "api_key" not in form.export_value()
    assert export_config(parse_config(form.value())) == form.export_value()
    assert parse_config(form.value()).api_key.get_secret_value() == "sk-secret"
    # Empty secrets are left out of the configuration entirely.
    form.fields["api_key"].value = ""
    assert "api_key" not in form.value()


def test_cli_args_greys_out_the_fields_it_overrides() -> None:
    """The schema names what cli_args replaces (config/llamacpp.py); the form greys exactly those out."""
    schema = config_schema("llamacpp")
    assert schema["properties"]["cli_args"]["overrides"] == overridden_fields(field_specs(schema))["cli_args"]
    form = SchemaForm(schema)
    overrides = overridden_fields(form.specs)["cli_args"]
    expected = {
        n for n, p in schema["properties"].items()
        if p["group"] not in CLI_ARGS_KEEPS_GROUPS and n not in CLI_ARGS_KEEPS_FIELDS
    }
    assert set(overrides) == expected
    assert {"temperature", "ctx_size", "threads", "tensor_split", "n_gpu_layers", "verbose"} <= expected
    assert not {"model", "model_alias", "name", "idle_time_limit_hours", "hf_token"} & expected
    assert not any(form.fields[n].disabled for n in expected)
    form.fields["cli_args"].value = "--temp 0.1 -c 512"
    assert all(form.fields[n].disabled for n in expected)
    assert not form.fields["model"].disabled and not form.fields["name"].disabled
    assert "Greyed-out" in form.fields["cli_args"].help.value
    form.fields["cli_args"].value = ""
    assert not any(form.fields[n].disabled for n in expected)
    # Other kinds have no overriding field.
    assert overridden_fields(field_specs(config_schema("llm"))) == {}


def test_server_errors_appear_next_to_their_fields() -> None:
    form = SchemaForm(config_schema("embedding"))
    form.fields["models"].add_item({"model": "/m/two"})
    leftover = form.show_errors([
        {"field": "name", "message": "String should match pattern"},
        {"field": "log_level", "message": "Input should be 'debug' or 'info'", "allowed": ["debug", "info"]},
        {"field": "models.1.pooling", "message": "splade needs a masked-LM model"},
        {"field": "(root)", "message": "disk_swap requires cpu_offload to be off"},
    ], "invalid configuration")
    assert "String should match pattern" in form.fields["name"].error.value
    assert form.fields["name"].error.layout.display == ""
    assert "allowed" not in form.fields["log_level"].error.value or "debug" in form.fields["log_level"].error.value
    item = form.fields["models"].items[1]
    assert "splade" in item.fields["pooling"].error.value
    assert [e["field"] for e in leftover] == ["(root)"]
    assert "disk_swap" in form.message.value
    assert form.accordion.titles[form.accordion.selected_index] == "⚠ Instance"
    assert "⚠ Models" in form.accordion.titles and "Idle" in form.accordion.titles
    form.clear_errors()
    assert form.fields["name"].error.value == "" and item.fields["pooling"].error.value == ""
    assert not any(t.startswith("⚠") for t in form.accordion.titles)


def test_typed_values_parse_and_bad_ones_reach_the_server_for_a_message() -> None:
    form = SchemaForm(config_schema("llamacpp"))
    form.set_value(minimal("llamacpp"))
    form.fields["threads"].value = "4"
    form.fields["gpus"].input.value = "0, 2"
    form.fields["env"].input.value = "A=1\n\nB=two=2"
    assert form.value()["threads"] == 4
    assert form.value()["gpus"] == [0, 2]
    assert form.value()["env"] == {"A": "1", "B": "two=2"}
    form.fields["gpus"].input.value = "auto"
    assert form.value()["gpus"] == "auto"
    form.fields["threads"].input.value = "many"
    with pytest.raises(ValueError) as info:
        parse_config(form.value())
    assert "threads" in str(info.value)


def test_groups_follow_the_declared_order() -> None:
    specs = field_specs(config_schema("llamacpp"))
    names = [g for g, _ in grouped(specs, config_schema("llamacpp")["x-group-order"])]
    assert names[:2] == ["Instance", "Model"] and names[-1] == "Idle"
