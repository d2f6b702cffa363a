"""The part of docs/openapi.yaml that is generated: component schemas from the pydantic bodies.

pydantic writes JSON Schema 2020-12; the document is OpenAPI 3.0, so a few forms are
rewritten (`anyOf` with null becomes `nullable`, numeric `exclusiveMinimum` becomes the
boolean form, `const` becomes a one-value `enum`). The generated text sits between two
marker lines of the document; `scripts/gen_openapi.py` rewrites it and a unit test fails
when it is stale.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from .schemas import REQUEST_MODELS, RESPONSE_MODELS

BEGIN = "    # BEGIN generated from jupyter_modeldeploy/server_ext/schemas.py by scripts/gen_openapi.py"
END = "    # END generated"
REF = "#/components/schemas/{model}"
DROPPED = {"title"}


def _openapi30(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi30(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi30(v) for k, v in node.items() if k not in DROPPED}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out = {**rest[0], **out}
        elif len(rest) == 1:
            out["allOf"] = rest
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    if isinstance(out.get("exclusiveMinimum"), (int, float)) and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


def components() -> dict[str, Any]:
    """OpenAPI 3.0 schemas of every REST body model, keyed by model name."""
    pairs = [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in RESPONSE_MODELS]
    _, top = models_json_schema(pairs, ref_template=REF)
    return {name: _openapi30(schema) for name, schema in sorted(top.get("$defs", {}).items())}


def region() -> str:
    """The generated lines of the document, markers included."""
    body = yaml.safe_dump(components(), sort_keys=False, default_flow_style=None, width=120)
    indented = "".join(f"    {line}\n" for line in body.splitlines())
    return f"{BEGIN}\n{indented}{END}\n"


def update(document: str) -> str:
    """The document with its generated region replaced (it must hold both markers)."""
    start = document.index(BEGIN)
    end = document.index(END, start) + len(END) + 1
    return document[:start] + region() + document[end:]
