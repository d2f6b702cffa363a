"""How an engine's loading shows in its own console: log patterns that mark its phases, declared per engine.

A launch plan lists `ProgressPattern`s; the supervisor matches each console line against them
and moves the deployment's loading phase (with a percentage when the line carries one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The phases of `loading`, in order.
PREPARING = "preparing"  # planning the launch: resolving the model, writing files
DOWNLOADING = "downloading"  # fetching model files from the Hugging Face hub (bytes, %, rate)
BUILDING = "building engine"  # compiling kernels or graphs before it can load
STARTING = "starting engine"  # the process runs; nothing loaded yet
LOADING_WEIGHTS = "loading weights"
WARMING_UP = "warming up"  # weights in memory: context, caches, first passes, the HTTP server
READY = "ready"
PHASES: tuple[str, ...] = (PREPARING, DOWNLOADING, BUILDING, STARTING, LOADING_WEIGHTS, WARMING_UP, READY)


@dataclass(frozen=True)
class ProgressPattern:
    """A console line that marks a phase: `regex` (searched), and optionally the groups giving `done` of `total`."""

    regex: str
    phase: str
    done_group: str | None = None  # named group: a count done, or a percentage when total_group is None
    total_group: str | None = None

    def match(self, line: str) -> tuple[str, float | None] | None:
        """(phase, percent or None) when the line matches."""
        found = re.search(self.regex, line)
        if found is None:
            return None
        if self.done_group is None:
            return self.phase, None
        try:
            done = float(found.group(self.done_group))
            total = float(found.group(self.total_group)) if self.total_group else 100.0
        except (IndexError, TypeError, ValueError):
            return self.phase, None
        return self.phase, max(0.0, min(100.0, 100.0 * done / total)) if total > 0 else None


LLAMA_SERVER = [
    ProgressPattern(r"load_model: loading model", LOADING_WEIGHTS),
    ProgressPattern(r"load_model: initializing|llama_server: model loaded", WARMING_UP),
]
VLLM = [
    ProgressPattern(r"torch\.compile|Compiling a graph", BUILDING),
    ProgressPattern(r"Starting to load model|Loading weights", LOADING_WEIGHTS),
    ProgressPattern(r"Loading safetensors checkpoint shards:\s*(?P<pct>\d+)% Completed", LOADING_WEIGHTS, "pct"),
    ProgressPattern(r"Model loading took|Loading weights took|KV cache|Starting vLLM API server", WARMING_UP),
]
EMBEDDING = [
    ProgressPattern(r"embedding server: listening on|listening on .* \(device", LOADING_WEIGHTS),
    ProgressPattern(r"serving \d+ model\(s\)", WARMING_UP),
]
