"""Universal Memory: a device memory budget shared by the models of one deployment.

The policy (`choose_victims`) is a pure function over `ModelMemoryState` snapshots; the
`MemoryManager` is the thin machinery around it that moves models between the device,
CPU RAM and disk. Neither imports torch: the manager acts through `ModelHandle` objects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal, Protocol

log = logging.getLogger(__name__)

ON_DEVICE = "on_device"
OFFLOADED = "offloaded"
ON_DISK = "on_disk"
LOADING = "loading"
STATES: tuple[str, ...] = (ON_DEVICE, OFFLOADED, ON_DISK, LOADING)

EvictionMode = Literal["cpu_offload", "disk_swap"]


@dataclass(frozen=True)
class ModelMemoryState:
    """What the eviction policy needs to know about one model."""

    name: str
    state: str  # one of STATES
    size_bytes: int  # bytes on the device when the model is there (0 while unknown)
    last_used: float  # monotonic time of the last finished batch (or load)
    in_flight: int = 0  # requests admitted and not yet answered
    kept_bytes: int = 0  # bytes an eviction leaves on the device (small tensors under cpu_offload)

    @property
    def charged_bytes(self) -> int:
        """Bytes this model holds on the device right now."""
        if self.state in (ON_DEVICE, LOADING):
            return self.size_bytes
        if self.state == OFFLOADED:
            return self.kept_bytes
        return 0


def choose_victims(
    wanted: str, models: Sequence[ModelMemoryState], budget_bytes: int | None
) -> list[str] | None:
    """The models to evict so that `wanted` fits on the device, least recently used first.

    Returns [] when it fits already (or there is no budget), and None when it cannot fit
    now because models with requests in flight hold the memory (the caller waits for one
    to finish and asks again). Only idle models that are on the device are candidates.
    A model larger than the whole budget gets the device to itself.
    """
    if budget_bytes is None:
        return []
    by_name = {m.name: m for m in models}
    if wanted not in by_name:
        raise KeyError(f"unknown model {wanted!r}")
    need = by_name[wanted].size_bytes
    others = [m for m in models if m.name != wanted]
    used = sum(m.charged_bytes for m in others)
    if used + need <= budget_bytes:
        return []
    candidates = sorted(
        (m for m in others if m.state == ON_DEVICE and m.in_flight == 0),
        key=lambda m: (m.last_used, m.name),
    )
    if need > budget_bytes:
        if any(m.state in (ON_DEVICE, LOADING) and m not in candidates for m in others):
            return None
        return [m.name for m in candidates]
    victims: list[str] = []
    for model in candidates:
        victims.append(model.name)
        used -= model.size_bytes - model.kept_bytes
        if used + need <= budget_bytes:
            return victims
    return None


class ModelHandle(Protocol):
    """What the manager can do to one model (implemented by the loader's runtime)."""

    def load(self) -> int:
        """Load from disk into CPU RAM; return the bytes it will take on the device."""
        ...

    def to_device(self) -> None:
        """Move the loaded model onto the serving device."""
        ...

    def offload(self) -> int:
        """Move the model to CPU RAM; return the bytes left on the device."""
        ...

    def unload(self) -> None:
        """Drop the model's weights from memory (it reloads from disk)."""
        ...


@dataclass
class _Tracked:
    handle: ModelHandle
    state: ModelMemoryState
    loads: int = 0
    swaps_in: int = 0
    swap_in_seconds: float = 0.0
    swaps_out: int = 0
    swap_out_seconds: float = 0.0


class MemoryManager:
    """Keeps the models' device usage within the budget by evicting idle models.

    Every transition runs under one lock, so a model is never chosen, moved and used at
    once; a model with requests in flight is never a victim. Blocking work (loading,
    moving tensors) runs on a dedicated thread, off the event loop.
    """

    def __init__(
        self,
        budget_bytes: int | None,
        mode: EvictionMode,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.mode: EvictionMode = mode
        self._clock = clock
        self._on_change = on_change
        self._models: dict[str, _Tracked] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory")

    def add(self, name: str, handle: ModelHandle) -> None:
        """Register a model, not loaded yet."""
        self._models[name] = _Tracked(handle, ModelMemoryState(name, ON_DISK, 0, self._clock()))

    def state(self, name: str) -> ModelMemoryState:
        """The model's current memory state."""
        return self._models[name].state

    def snapshot(self) -> list[ModelMemoryState]:
        """Every model's memory state, in registration order."""
        return [t.state for t in self._models.values()]

    def used_bytes(self) -> int:
        """Bytes charged to the device by all models."""
        return sum(t.state.charged_bytes for t in self._models.values())

    def stats(self, name: str) -> dict[str, object]:
        """The model's memory state and swap history, for /info."""
        t = self._models[name]
        return {
            "state": t.state.state,
            "size_bytes": t.state.size_bytes,
            "device_bytes": t.state.charged_bytes,
            "in_flight": t.state.in_flight,
            "loads": t.loads,
            "swap_count": t.swaps_in,
            "swap_seconds": round(t.swap_in_seconds, 6),
            "evictions": t.swaps_out,
            "eviction_seconds": round(t.swap_out_seconds, 6),
        }

    def swap_totals(self, name: str) -> tuple[int, float, int, float]:
        """(swaps in, seconds, swaps out, seconds) of one model."""
        t = self._models[name]
        return t.swaps_in, t.swap_in_seconds, t.swaps_out, t.swap_out_seconds

    def _set(self, name: str, **changes: object) -> None:
        tracked = self._models[name]
        tracked.state = replace(tracked.state, **changes)  # type: ignore[arg-type]
        if self._on_change is not None:
            self._on_change(name)

    def request_started(self, name: str) -> None:
        """A request for the model was admitted: it may not be evicted until it ends."""
        self._set(name, in_flight=self._models[name].state.in_flight + 1)

    def request_finished(self, name: str) -> None:
        """A request ended; wake any transition waiting for memory."""
        self._set(name, in_flight=max(0, self._models[name].state.in_flight - 1))
        self._changed.set()

    def touch(self, name: str) -> None:
        """The model was just used (LRU order)."""
        self._set(name, last_used=self._clock())

    async def ensure_on_device(self, name: str) -> None:
        """Return once the model is on the device, loading or bringing it back if needed."""
        if self._models[name].state.state == ON_DEVICE:
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            tracked = self._models[name]
            if tracked.state.state == ON_DEVICE:
                return
            previous = tracked.state.state
            swapped = tracked.loads > 0
            started = self._clock()
            self._set(name, state=LOADING)
            try:
                if previous == ON_DISK:
                    size = await loop.run_in_executor(self._executor, tracked.handle.load)
                    tracked.loads += 1
                    self._set(name, size_bytes=size)
                waited = await self._make_room(name)
                await loop.run_in_executor(self._executor, tracked.handle.to_device)
            except BaseException:
                self._set(name, state=previous)
                raise
            if swapped:
                tracked.swaps_in += 1
                tracked.swap_in_seconds += self._clock() - started - waited
            self._set(name, state=ON_DEVICE, last_used=self._clock())
            log.info(
                "model %s on device (%d bytes; device use %d)",
                name,
                tracked.state.size_bytes,
                self.used_bytes(),
            )

    async def _make_room(self, name: str) -> float:
        """Evict victims until `name` fits; wait while busy models hold the memory.

        Returns the seconds spent waiting for busy models (not part of the swap time).
        """
        waited = 0.0
        while True:
            victims = choose_victims(name, self.snapshot(), self.budget_bytes)
            if victims is not None:
                break
            self._changed.clear()
            wait_start = self._clock()
            await self._changed.wait()
            waited += self._clock() - wait_start
        if self.budget_bytes is not None and self._models[name].state.size_bytes > self.budget_bytes:
            log.warning("model %s alone exceeds the memory budget of %d bytes", name, self.budget_bytes)
        for victim in victims:
            await self._evict(victim)
        return waited

    async def _evict(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        tracked = self._models[name]
        started = self._clock()
        if self.mode == "cpu_offload":
            # Marked first: a request arriving meanwhile sees the model as away and queues for it.
            self._set(name, state=OFFLOADED)
            kept = await loop.run_in_executor(self._executor, tracked.handle.offload)
            self._set(name, kept_bytes=kept)
        else:
            self._set(name, state=ON_DISK, kept_bytes=0)
            await loop.run_in_executor(self._executor, tracked.handle.unload)
        tracked.swaps_out += 1
        tracked.swap_out_seconds += self._clock() - started
        log.info("evicted model %s (%s)", name, self.mode)

    def close(self) -> None:
        """Stop the manager's worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
