"""What a request's JSON body decides: the model, per-model limits, the stream-usage request, and the priority.

Pure functions over the body's bytes, shared by the Jupyter server's handler (`proxy`) and the
relay worker (`relay.worker`), so both read a body the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..engines.base import ModelLimits
from .usage import wants_usage_injection

#: The routes whose bodies take a scheduling `priority` where the engine schedules by it.
PRIORITY_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})


@dataclass(frozen=True)
class BodyRefusal:
    """A body the gateway refuses: the status, message, error type and extra fields of the answer."""

    status: int
    message: str
    kind: str = "invalid_request_error"
    extra: dict[str, Any] | None = None


@dataclass
class PreparedBody:
    """The body to forward and what was read from it."""

    body: bytes
    model: str | None  # the model the request is for (None: not named)
    injected: bool = False  # the gateway asked the engine for stream usage itself
    stream: bool = False  # the body asks for a streamed answer
    refusal: BodyRefusal | None = None


def input_count(inputs: Any) -> int | None:
    """How many inputs a request's `input`/`inputs` holds; None when it is not a list.

    One list of token ids (integers) is one input, as OpenAI and TEI read it.
    """
    if not isinstance(inputs, list):
        return None
    if inputs and all(isinstance(i, int) and not isinstance(i, bool) for i in inputs):
        return 1
    return len(inputs)


def prepare_body(
    body: bytes, content_type: str, *, engine_path: str, model: str | None, models: list[str],
    limits_for: Callable[[str | None], ModelLimits], stream_usage: bool, priority: int | None = None,
) -> PreparedBody:
    """Read a request body: the model (named by the URL as `model`, else by the body), the per-model
    payload and batch limits, and `stream_options.include_usage` added where usage must be asked for.

    `priority`: the engine schedules by a body's `priority` (vLLM's `--scheduling-policy priority`); the caller's
    key decides it, never the body (a caller could otherwise send one that goes before everyone)."""
    if not body or "json" not in content_type:
        return PreparedBody(body, model)
    try:
        data = json.loads(body)
    except RecursionError:  # the C decoder refuses deep nesting itself, at no cost to shallow bodies
        return PreparedBody(body, model, refusal=BodyRefusal(400, "request body nests too deeply"))
    except ValueError:
        return PreparedBody(body, model, refusal=BodyRefusal(400, "request body is not valid JSON"))
    if not isinstance(data, dict):
        return PreparedBody(body, model)
    stream = data.get("stream") is True
    changed = False
    if model is not None and data.get("model") != model:
        data["model"] = model
        changed = True
    elif model is None and isinstance(data.get("model"), str):
        if len(models) > 1 and data["model"] not in models:
            return PreparedBody(body, model, stream=stream, refusal=BodyRefusal(
                404, f"model {data['model'][:200]!r} does not exist; this deployment serves: {', '.join(models)}",
                "not_found_error", {"models": models},
            ))
        model = data["model"]
    limits = limits_for(model)
    if limits.payload_limit_bytes is not None and len(body) > limits.payload_limit_bytes:
        return PreparedBody(body, model, stream=stream, refusal=BodyRefusal(
            413, f"request body of {len(body)} bytes exceeds the limit of {limits.payload_limit_bytes} bytes"))
    count = input_count(data.get("input", data.get("inputs")))
    if limits.max_client_batch_size is not None and count is not None and count > limits.max_client_batch_size:
        return PreparedBody(body, model, stream=stream, refusal=BodyRefusal(
            422, f"{count} inputs in one request exceed max_client_batch_size={limits.max_client_batch_size}"))
    injected = stream_usage and wants_usage_injection(engine_path, data)
    if injected:
        options = data.get("stream_options") if isinstance(data.get("stream_options"), dict) else {}
        data["stream_options"] = {**options, "include_usage": True}
        changed = True
    if priority is not None and engine_path in PRIORITY_PATHS and (priority or "priority" in data):
        data["priority"] = priority  # 0, the engine's default, is sent only over a body's own
        changed = True
    return PreparedBody(json.dumps(data).encode() if changed else body, model, injected, stream)
