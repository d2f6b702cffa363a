"""A request's scheduling priority, where the engine schedules by it: the key's class, never the body's own."""

from __future__ import annotations

import json

from jupyter_modeldeploy.engines.base import ModelLimits
from jupyter_modeldeploy.gateway.body import prepare_body


def forwarded(body: dict[str, object], priority: int | None, path: str = "/v1/chat/completions") -> dict[str, object]:
    prepared = prepare_body(json.dumps(body).encode(), "application/json", engine_path=path, model=None,
                            models=["m"], limits_for=lambda _m: ModelLimits(), stream_usage=False, priority=priority)
    assert prepared.refusal is None
    return json.loads(prepared.body)


def test_a_batch_keys_request_goes_with_its_class() -> None:
    assert forwarded({"messages": []}, 1)["priority"] == 1


def test_a_body_cannot_choose_its_own_priority() -> None:
    assert forwarded({"messages": [], "priority": -1000}, 0)["priority"] == 0
    assert forwarded({"messages": [], "priority": -1000}, 1)["priority"] == 1


def test_an_interactive_request_is_left_as_it_came_and_other_routes_and_engines_are_untouched() -> None:
    assert "priority" not in forwarded({"messages": []}, 0)
    assert "priority" not in forwarded({"input": "x"}, 1, path="/v1/embeddings")
    assert forwarded({"messages": [], "priority": 5}, None)["priority"] == 5  # an engine that does not schedule by it
