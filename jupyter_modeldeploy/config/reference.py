"""The configuration reference (docs/configuration.md), rendered from the config models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import CONFIG_CLASSES, config_schema
from .common import GROUP_ORDER
from .placement import PlacementSpec
from .quotas import KeyQuotaOptions

#: Sections shared by every kind: documented once, under their dotted names.
SHARED_SECTIONS: dict[str, type[BaseModel]] = {"placement": PlacementSpec, "api_key_quotas": KeyQuotaOptions}

TITLES = {
    "llamacpp": "`llamacpp`: GGUF models on llama.cpp",
    "llm": "`llm`: Hugging Face models on vLLM",
    "embedding": "`embedding`: sentence-transformers models",
}


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "$ref" in prop:
        return "object: " + prop["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " or ".join(_type(p, defs) for p in prop["anyOf"] if p.get("type") != "null") + " (optional)"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object" and "additionalProperties" in prop:
        return f"map of {_type(prop['additionalProperties'], defs) if isinstance(prop['additionalProperties'], dict) else 'any'}"
    if prop.get("format") == "password":
        return "secret string"
    return str(kind)


def _limits(prop: dict[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in prop:
            parts.append(f"{sign} {prop[key]}")
    for option in prop.get("anyOf", []):
        parts.extend(_limits(option).split(", ") if _limits(option) else [])
    return ", ".join(parts)


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "required"
    value = prop["default"]
    if value is None:
        return "empty"
    if value == "":
        return '`""`'
    if "$ref" in prop:
        return "its fields' defaults (below)"
    return f"`{value}`".replace("|", "\\|")


def _table(props: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    by_group: dict[str, list[str]] = {}
    for name, prop in props.items():
        by_group.setdefault(prop.get("group", "Other"), []).append(name)
    lines: list[str] = []
    for group in [g for g in GROUP_ORDER if g in by_group] + [g for g in by_group if g not in GROUP_ORDER]:
        lines += [f"#### {group}", "", "| field | type | default | limits | meaning |", "| --- | --- | --- | --- | --- |"]
        for name in by_group[group]:
            prop = props[name]
            description = prop.get("description", "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {_type(prop, defs)} | {_default(prop)} | {_limits(prop)} | {description} |")
        lines.append("")
    return lines


def render() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config models by `make docs` (`scripts/gen_config_reference.py`); a test fails",
        "when this file is stale. Every field is a launch-form option, exported and imported as JSON.",
        "",
    ]
    for kind in CONFIG_CLASSES:
        schema = config_schema(kind)
        defs = schema.get("$defs", {})
        lines += [f"## {TITLES[kind]}", ""]
        lines += _table(schema["properties"], defs)
        shared = {ref.rsplit("/", 1)[-1] for ref in _refs(schema, SHARED_SECTIONS)}
        for def_name, definition in defs.items():
            if "properties" in definition and def_name not in shared:
                lines += [f"### {def_name} (each entry of `models`)", ""]
                lines += _table(definition["properties"], defs)
    for section, model in SHARED_SECTIONS.items():
        lines += [f"## `{section}`: the same for every kind", "", (model.__doc__ or "").strip(), ""]
        lines += _section(section, model.model_json_schema())
    return "\n".join(lines).rstrip() + "\n"


def _refs(schema: dict[str, Any], sections: dict[str, type[BaseModel]]) -> set[str]:
    """The `$defs` names a shared section reaches (its own and its subsections')."""
    found: set[str] = set()
    pending = [schema["properties"][name] for name in sections if name in schema["properties"]]
    defs = schema.get("$defs", {})
    while pending:
        node = pending.pop()
        ref = node.get("$ref")
        if ref and ref not in found:
            found.add(ref)
            pending.extend(defs[ref.rsplit("/", 1)[-1]].get("properties", {}).values())
    return found


def _section(prefix: str, schema: dict[str, Any]) -> list[str]:
    """One table of a shared section, its subsections' fields under dotted names."""
    defs = schema.get("$defs", {})
    rows: list[str] = []

    def walk(path: str, props: dict[str, Any]) -> None:
        for name, prop in props.items():
            ref = prop.get("$ref")
            if ref:
                walk(f"{path}.{name}", defs[ref.rsplit("/", 1)[-1]]["properties"])
                continue
            description = prop.get("description", "").replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{path}.{name}` | {_type(prop, defs)} | {_default(prop)} | {_limits(prop)} | {description} |")

    walk(prefix, schema["properties"])
    return ["| field | type | default | limits | meaning |", "| --- | --- | --- | --- | --- |", *rows, ""]
