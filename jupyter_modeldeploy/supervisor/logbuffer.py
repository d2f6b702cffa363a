"""An engine's console: the last lines in memory, all of it on disk (size-capped), secrets masked."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

MASK = "********"


class LogBuffer:
    """Bounded in-memory tail of a console, mirrored to a capped log file, with followers."""

    def __init__(self, path: Path, *, max_lines: int = 2000, max_file_bytes: int = 5_000_000):
        self.path = path
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.max_file_bytes = max_file_bytes
        self._secrets: list[str] = []
        self._followers: set[asyncio.Queue[str | None]] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self.lines.extend(path.read_text(errors="replace").splitlines()[-max_lines:])

    def set_secrets(self, secrets: list[str]) -> None:
        """Values to mask in every line from now on (keys, tokens)."""
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        """The text with every known secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def append(self, line: str) -> None:
        """Add one console line."""
        line = self.mask(line.rstrip("\r\n"))
        self.lines.append(line)
        self._write(line + "\n")
        for queue in self._followers:
            queue.put_nowait(line)

    def _write(self, text: str) -> None:
        try:
            if self.path.exists() and self.path.stat().st_size > self.max_file_bytes:
                self.path.replace(self.path.with_suffix(self.path.suffix + ".1"))
            with self.path.open("a", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            pass  # the in-memory tail still has it; a full disk must not stop the engine

    def tail(self, n: int) -> list[str]:
        """The last `n` lines."""
        if n <= 0:
            return []
        return list(self.lines)[-n:]

    def follow(self) -> asyncio.Queue[str | None]:
        """A queue that receives every new line (None when the follower should end)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._followers.add(queue)
        return queue

    def unfollow(self, queue: asyncio.Queue[str | None]) -> None:
        """Stop feeding a follower."""
        self._followers.discard(queue)

    def close_followers(self) -> None:
        """Tell every follower that the console ended."""
        for queue in self._followers:
            queue.put_nowait(None)
