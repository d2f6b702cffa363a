"""Read token usage out of a response as it streams by, passing every byte on unchanged.

Usage comes in several shapes, all read here: OpenAI's `usage` (`prompt_tokens`,
`completion_tokens`), Anthropic's and the Responses API's (`input_tokens`, `output_tokens`,
spread over `message_start` / `message_delta` or inside `response`), and llama.cpp's final
`timings` (`cache_n + prompt_n`, `predicted_n`), which llama-server sends on every stream.

The one change the gateway may make to a stream: where it asked an OpenAI-style engine for
usage the client did not ask for (`stream_options.include_usage`), it removes the one extra
event that request added (empty `choices`, `usage` set) and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_JSON_BYTES = 4 << 20  # bodies larger than this are passed on but not parsed
MAX_EVENT_BYTES = 1 << 20  # an SSE event larger than this is passed on but not parsed
ANTHROPIC_PROMPT_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
USAGE_INJECTION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


@dataclass
class Usage:
    """Tokens reported by the engine."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_of(data: Any) -> Usage | None:
    """The usage an engine reported in one JSON object (a body or an SSE event), if any."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    for holder in ("response", "message"):  # Responses API events, Anthropic's message_start
        if not isinstance(usage, dict) and isinstance(data.get(holder), dict):
            usage = data[holder].get("usage")
    if isinstance(usage, dict):
        prompt = _int(usage.get("prompt_tokens"))
        if prompt is None and _int(usage.get("input_tokens")) is not None:
            # Anthropic counts cached prompt tokens apart from input_tokens.
            prompt = sum(_int(usage.get(k)) or 0 for k in ANTHROPIC_PROMPT_FIELDS)
        completion = _int(usage.get("completion_tokens"))
        if completion is None:
            completion = _int(usage.get("output_tokens"))
        if prompt is not None or completion is not None:
            return Usage(prompt or 0, completion or 0)
    timings = data.get("timings")
    if isinstance(timings, dict) and _int(timings.get("predicted_n")) is not None:
        prompt = (_int(timings.get("prompt_n")) or 0) + (_int(timings.get("cache_n")) or 0)
        return Usage(prompt, _int(timings["predicted_n"]) or 0)
    return None


def merge(old: Usage | None, new: Usage) -> Usage:
    """Later events complete earlier ones (Anthropic sends input tokens first, output last)."""
    if old is None:
        return new
    return Usage(new.prompt_tokens or old.prompt_tokens, new.completion_tokens or old.completion_tokens)


class UsageTap:
    """Fed every response chunk; finds usage in a JSON body or in SSE events.

    `feed()` returns the bytes to pass on: the chunk itself, except that with
    `drop_injected_usage` the event the gateway's own usage request added is left out.
    """

    def __init__(self, content_type: str, *, drop_injected_usage: bool = False, read_json: bool = True):
        self.is_sse = content_type.startswith("text/event-stream")
        self.is_json = read_json and "json" in content_type  # no usage in answers to GET: not parsed
        self.drop_injected_usage = drop_injected_usage and self.is_sse
        self.usage: Usage | None = None
        self.events = 0
        self._buffer = bytearray()
        self._too_big = False
        self._held: tuple[bytes, dict[str, Any]] | None = None  # an event that finished a choice, held one event

    def feed(self, chunk: bytes) -> bytes:
        """Observe a chunk; returns the bytes to pass on."""
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
                found = usage_of(json.loads(self._buffer))
            except (ValueError, RecursionError):
                found = None
            if found is not None:
                self.usage = found
        if self.is_sse and self._buffer and not self._too_big:
            self._inspect(bytes(self._buffer))  # a last event without its blank line
        return self.usage

    def _feed_sse(self, chunk: bytes) -> bytes:
        buffer = self._buffer
        buffer += chunk
        kept = bytearray() if self.drop_injected_usage else None
        start = 0
        while True:
            end = _event_end(buffer, start)
            if end < 0:
                break
            event = bytes(buffer[start:end])
            start = end
            self.events += 1
            data = self._inspect(event)
            if kept is not None:
                kept += self._pass_injected(event, data)
        del buffer[:start]  # once per chunk: a fast stream brings many events in one read
        if len(buffer) > MAX_EVENT_BYTES:
            if kept is not None:
                kept += self._release() + buffer
            buffer.clear()
        if kept is None:
            return chunk  # nothing is ever removed: pass the bytes on as they came
        return bytes(kept)

    def close(self) -> bytes:
        """Call when the body ended: the bytes still held back (a last event the usage event did not follow)."""
        return self._release() + bytes(self._buffer) if self.drop_injected_usage else b""

    def _release(self) -> bytes:
        held, self._held = self._held, None
        return held[0] if held else b""

    def _pass_injected(self, event: bytes, data: dict[str, Any] | None) -> bytes:
        """The bytes to pass on for one event of a stream whose usage the gateway asked for.

        The engine may move fields of the last content event (vLLM: `system_fingerprint`) onto
        the usage event the client did not ask for. So the event that finishes a choice is held
        until the next one: if that is the injected usage event, it is dropped and the fields it
        took are put back where the client would have had them; else both pass unchanged.
        """
        if data is not None and data.get("choices") == [] and isinstance(data.get("usage"), dict):
            held, self._held = self._held, None
            if held is None:
                return b""
            merged = {**held[1], **{k: v for k, v in data.items() if k not in held[1] and k not in ("choices", "usage")}}
            return b"data: " + json.dumps(merged, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
        out = self._release()
        choices = data.get("choices") if data is not None else None
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            self._held = (event, data)
            return out
        return out + event

    def _inspect(self, event: bytes) -> dict[str, Any] | None:
        """Read usage from one SSE event; returns its JSON data when it may matter (usage, or a stream we edit)."""
        if not self.drop_injected_usage and b"usage" not in event and b"timings" not in event:
            return None
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]":
                continue
            try:
                data = json.loads(payload)
            except (ValueError, RecursionError):
                continue
            if not isinstance(data, dict):
                return None
            found = usage_of(data)
            if found is not None:
                self.usage = merge(self.usage, found)
            return data
        return None


def _event_end(buffer: bytearray, start: int = 0) -> int:
    """The end of the first complete SSE event from `start` (after its blank line), or -1.

    Each separator is looked for only up to the first one found: a search of the whole rest of
    the buffer per event would make a fast stream's chunk of many events quadratic."""
    lf = buffer.find(b"\n\n", start)
    crlf = buffer.find(b"\r\n\r\n", start, lf + 2 if lf >= 0 else len(buffer))
    if crlf >= 0:
        return crlf + 4
    return lf + 2 if lf >= 0 else -1


def wants_usage_injection(path: str, body: dict[str, object]) -> bool:
    """An OpenAI-style streaming request that did not ask for usage itself."""
    if path not in USAGE_INJECTION_PATHS or body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if options is None:
        return True
    return isinstance(options, dict) and "include_usage" not in options
