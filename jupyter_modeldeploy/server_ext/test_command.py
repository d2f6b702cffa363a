"""The test request of a deployment's model and the one curl command every view shows for it."""

from __future__ import annotations

import json
import shlex
from typing import Any

from ..supervisor import Deployment

API_KEY_PLACEHOLDER = "$MODELDEPLOY_API_KEY"

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
