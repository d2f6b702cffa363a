"""How much memory a deployment will need: its engine's own answer (`Engine.fit_inputs`), as an estimate.

Every engine says what it takes at its peak, part by part, from its configuration and its model
files' headers (the built-in engines' arithmetic and measured constants are in their modules,
`engines/llamacpp.py`, `engines/llm.py`, `engines/embedding.py`; see docs/fit.md for how each part is
made and how it was checked against real peak memory). This module knows no kind: it asks the engine,
and a model file that cannot be read gives an unknown estimate saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..engines import ModelFileUnreadable, get_engine

Where = Literal["gpu", "host"]


@dataclass(frozen=True)
class Part:
    """One component of the estimate."""

    what: str
    bytes: int
    where: Where

    def to_json(self) -> dict[str, Any]:
        """The part as the REST answer carries it."""
        return {"what": self.what, "bytes": self.bytes, "where": self.where}


@dataclass
class Estimate:
    """The memory a deployment will need at its peak, part by part; `known` is False without model files."""

    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    known: bool = True

    def total(self, where: Where) -> int:
        """Bytes needed on the GPU(s) or in host RAM."""
        return sum(p.bytes for p in self.parts if p.where == where)

    def add(self, what: str, size: float, where: Where = "host") -> None:
        """Add a part (one of no bytes is left out)."""
        if size > 0:
            self.parts.append(Part(what, int(size), where))

    def to_json(self) -> dict[str, Any]:
        """The estimate as the REST answer carries it."""
        return {"known": self.known, "gpu_bytes": self.total("gpu"), "host_bytes": self.total("host"),
                "parts": [p.to_json() for p in self.parts], "notes": list(self.notes)}


def estimate(config: Any, *, gpu: bool = False, gpu_total_bytes: int = 0) -> Estimate:
    """The estimate for any kind, from its engine (`fit_inputs`; unknown where the engine cannot say); an
    unreadable model file gives an unknown estimate saying why."""
    try:
        answer = get_engine(config.kind).fit_inputs(config, gpu=gpu, gpu_total_bytes=gpu_total_bytes)
    except (OSError, ModelFileUnreadable) as exc:
        return Estimate(notes=[f"the model's files cannot be read for an estimate: {exc}"], known=False)
    est = Estimate(notes=list(answer.notes), known=answer.known)
    for need in answer.parts:
        est.add(need.what, need.bytes, need.where)
    return est
