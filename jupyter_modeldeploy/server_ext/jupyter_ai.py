"""One click from a deployment to a jupyter-ai model: entries in jupyter-ai's `custom_models`.

jupyter-ai 3.x (its Jupyternaut persona, `jupyter-ai[jupyternaut]`) keeps user-defined models
in `<jupyter data dir>/jupyter_ai/config.json` as `custom_models`: `{id, name, description,
model_id, params}`, where `model_id` is a LiteLLM id (`openai/<model>` for an OpenAI-compatible
server) and `params` the keyword arguments of its chat model (`api_base`, `api_key`). Each chat
model of the deployment gets one entry, with a key made for jupyter-ai (scoped to that
deployment, revoked when the registration is removed or the deployment deleted). Entry ids are
`custom-<uuid5 of deployment and model>/openai/<model>`: registering again replaces them.

The file is jupyter-ai's: entries of others are kept as they are; it is written atomically, 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir

NAMESPACE = uuid.UUID("6f1d7c3e-8d0b-4a51-9b5e-3c2a9f0e7d14")
DESCRIPTION_MARK = "jupyter-modeldeploy deployment "


def config_path() -> Path:
    """jupyter-ai's configuration file."""
    return Path(jupyter_data_dir()) / "jupyter_ai" / "config.json"


def entry_id(deployment_id: str, model: str) -> str:
    return f"custom-{uuid.uuid5(NAMESPACE, deployment_id + '/' + model)}/openai/{model}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"jupyter-ai's configuration {path.name} is not valid JSON ({exc}); left unchanged") from None
    if not isinstance(data, dict) or not isinstance(data.get("custom_models", []), list):
        raise ValueError(f"jupyter-ai's configuration {path.name} is not an object with a custom_models list")
    return data


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace the file in one step (a temporary file renamed), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _mine(entry: Any, deployment_id: str) -> bool:
    return isinstance(entry, dict) and entry.get("description", "") == DESCRIPTION_MARK + deployment_id


def register(path: Path, *, deployment_id: str, deployment: str, models: list[str], api_base: str,
             key: str) -> list[dict[str, Any]]:
    """Write one custom model per chat model (replacing this deployment's earlier ones); returns them,
    their keys left out."""
    data = _read(path)
    kept = [e for e in data.get("custom_models", []) if not _mine(e, deployment_id)]
    entries = [
        {"id": entry_id(deployment_id, model), "name": f"{deployment} · {model}" if len(models) > 1 else deployment,
         "description": DESCRIPTION_MARK + deployment_id, "model_id": f"openai/{model}",
         "params": {"api_base": api_base, "api_key": key}}
        for model in models
    ]
    write_atomic(path, {**data, "custom_models": entries + kept})
    return [{**e, "params": {"api_base": api_base}} for e in entries]


def registered(path: Path, deployment_id: str) -> list[dict[str, Any]]:
    """This deployment's entries now in the file (none when there is no file), their keys left out."""
    if not path.exists():
        return []
    shown = []
    for entry in _read(path).get("custom_models", []):
        # The file is jupyter-ai's and may be edited by hand: only well-formed entries of ours are shown.
        if _mine(entry, deployment_id) and all(isinstance(entry.get(k), str) for k in ("id", "name", "model_id")):
            params = entry.get("params")
            api_base = params.get("api_base") if isinstance(params, dict) else None
            shown.append({k: entry[k] for k in ("id", "name", "description", "model_id")}
                         | {"params": {"api_base": api_base} if isinstance(api_base, str) else {}})
    return shown


def unregister(path: Path, deployment_id: str) -> int:
    """Remove this deployment's entries; returns how many there were."""
    if not path.exists():
        return 0
    data = _read(path)
    models = data.get("custom_models", [])
    kept = [e for e in models if not _mine(e, deployment_id)]
    if len(kept) != len(models):
        write_atomic(path, {**data, "custom_models": kept})
    return len(models) - len(kept)
