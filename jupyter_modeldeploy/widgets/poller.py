"""A background poller: calls a function every few seconds until stopped.

Widgets update from this thread (ipykernel sends comm messages through its IOPub thread,
so that is safe); the kernel's main thread stays free for button clicks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Poller:
    """Run `tick()` every `interval_s` seconds in a daemon thread until `stop()`."""

    def __init__(self, tick: Callable[[], None], interval_s: float = 2.0, *,
                 on_error: Callable[[BaseException], None] | None = None, name: str = "modeldeploy-poller"):
        self.tick = tick
        self.interval_s = interval_s
        self.on_error = on_error
        self.name = name
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> Poller:
        """Start polling (the first tick runs at once); a second call does nothing."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def poke(self) -> None:
        """Run the next tick now instead of at the end of the interval."""
        self._wake.set()

    def stop(self, wait: bool = False) -> None:
        """Stop polling; with `wait`, until the current tick has finished."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval_s + 30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except BaseException as exc:  # a failing tick must not kill the poller
                if self.on_error is not None:
                    try:
                        self.on_error(exc)
                    except Exception:
                        pass
            self.ticks += 1
            self._wake.wait(self.interval_s)
            self._wake.clear()
