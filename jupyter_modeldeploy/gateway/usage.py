"""Read token usage out of a response as it streams by, without changing a byte of it."""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_JSON_BYTES = 4 << 20  # bodies larger than this are passed on but not parsed


@dataclass
class Usage:
    """Tokens reported by the engine's `usage` object."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageTap:
    """Fed every response chunk; finds `usage` in a JSON body or in SSE events.

    For streams it also notes when the first content event arrived (first-token latency)
    and can drop usage-only events the gateway itself asked for.
    """

    def __init__(self, content_type: str, *, drop_usage_only_events: bool = False):
        self.is_sse = content_type.startswith("text/event-stream")
        self.is_json = "json" in content_type
        self.drop_usage_only_events = drop_usage_only_events
        self.usage: Usage | None = None
        self.events = 0
        self._buffer = bytearray()
        self._too_big = False

    def feed(self, chunk: bytes) -> bytes:
        """Observe a chunk; returns the bytes to pass on (the same, unless an event is dropped)."""
        if self.is_sse:
            return self._feed_sse(chunk)
        if self.is_json and not self._too_big:
            self._buffer += chunk
            if len(self._buffer) > MAX_JSON_BYTES:
                self._too_big = True
                self._buffer.clear()
        return chunk

    def finish(self) -> Usage | None:
        """Call at the end of the body; returns the usage found, if any."""
        if self.is_json and not self._too_big and self._buffer:
            try:
                body = json.loads(self._buffer)
            except ValueError:
                body = None
            if isinstance(body, dict):
                self._take_usage(body.get("usage"))
        return self.usage

    def _feed_sse(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = bytearray()
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                break
            event = bytes(self._buffer[: end + 2])
            del self._buffer[: end + 2]
            self.events += 1
            if not self._inspect_event(event):
                out += event
        if not self.drop_usage_only_events:
            # Pass everything through at once: the pending part is only kept to parse it later.
            out = bytearray(chunk)
        return bytes(out)

    def _inspect_event(self, event: bytes) -> bool:
        """Parse one SSE event; True if it should be dropped."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]" or b"usage" not in payload:
                continue
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if isinstance(data, dict):
                self._take_usage(data.get("usage"))
                usage_only = not data.get("choices") and data.get("usage") is not None
                return self.drop_usage_only_events and usage_only
        return False

    def _take_usage(self, usage: object) -> None:
        if isinstance(usage, dict):
            self.usage = Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )


def wants_usage_injection(body: dict[str, object]) -> bool:
    """A streaming request that did not ask for usage itself."""
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    return not (isinstance(options, dict) and "include_usage" in options)
